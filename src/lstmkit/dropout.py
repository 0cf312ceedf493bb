"""Dropout, y = x * m / (1 - p) with m_i ~ Bernoulli(1 - p), drawn fast.

On a float32 or float64 CPU tensor the mask comes from the compiled extension
(``csrc/dropout.cpp``): element i is kept when SplitMix64's output number i + 1 from a per-call
seed, taken as a 32-bit fraction, is at least p. The seed is drawn from torch's default
generator, so ``torch.manual_seed`` makes runs repeat, and the backward pass recomputes the
mask from it instead of storing it. Elsewhere (other dtypes or devices, no compiler) this is
``torch.nn.functional.dropout``. Same values in distribution as torch's dropout, not the same
random stream. ``bernoulli`` draws zoneout's 0/1 masks from the same generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .engine import compiled


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float, seed: int) -> Tensor:
        ctx.p, ctx.seed = p, seed
        return compiled._load().dropout(x, p, seed)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        return compiled._load().dropout(dy, ctx.p, ctx.seed), None, None


def dropout_with_seed(x: Tensor, p: float, seed: int) -> Tensor:
    """Dropout with the mask of ``seed`` (the same seed, the same mask): the compiled path only."""
    if compiled._load() is None:
        raise RuntimeError(f"the compiled extension is not available: {compiled.build_error()}")
    return _Dropout.apply(x, p, seed)


def bernoulli(shape, p: float, like: Tensor) -> Tensor:
    """A tensor of ``shape`` in like's dtype and device, each element 1 with probability p, else
    0: on the compiled extension's counter-based generator (seeded from torch's default
    generator) where it can run, else torch's ``bernoulli_``."""
    if (like.device.type != "cpu" or like.dtype not in compiled.DTYPES
            or torch.compiler.is_compiling() or not compiled.available()):
        return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(p)
    seed = int(torch.randint(0, 2**62, ()))
    with torch._C._DisableFuncTorch():     # a plain tensor under torch.func's transforms too
        return compiled._load().bernoulli(list(shape), p, seed, like.dtype == torch.float64)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``torch.nn.functional.dropout(x, p, training)``, on the fast mask where it can run."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if (p == 1.0 or x.device.type != "cpu" or x.dtype not in compiled.DTYPES
            or torch.compiler.is_compiling() or not compiled.available()):
        return F.dropout(x, p, training=True)
    seed = int(torch.randint(0, 2**62, ()))
    return _Dropout.apply(x, p, seed)


class Dropout(nn.Dropout):
    """``torch.nn.Dropout`` on :func:`dropout`; same arguments and state (none)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
