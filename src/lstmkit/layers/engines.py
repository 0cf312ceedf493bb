"""Which engine a layer's call runs on (``engine="auto"``), and the engine names.

"python" walks time with the hand-written BPTT of ``lstmkit.engine.sequence``; "compiled" runs the
same BPTT in C++; "torch" calls torch's fused kernels (standard configurations only). The
thresholds below were measured in benchmarks/ (BENCHMARKS.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..engine.compiled import bf16_products, step_macs, trains_faster
from ..engine.compiled import usable as compiled_usable
from ..engine.ops import plain_eager

ENGINES = ("auto", "python", "torch", "compiled")
# "auto": up to this many steps per call the compiled engine beats torch's fused LSTM (which
# repacks the weights on every call; bench_generate.py)
AUTO_SHORT_T = 4
# "auto" under bfloat16 autocast: from this many multiply-adds per step's recurrent product on,
# the compiled engine's bfloat16 products beat torch's bfloat16 LSTM (bench_bf16.py, three runs:
# 0.82-0.91x its time at 67M (batch 64 x 512 units); at 8.4M (32 x 256) 0.85x, 1.09x, 1.18x;
# 1.17-1.66x at 3.2M and 1M)
AUTO_BF16_MACS = 32_000_000




def check_engine(name: str, engine: str, standard: bool) -> None:
    if engine not in ENGINES:
        raise ValueError(f"{name}: engine must be one of {ENGINES}, got {engine!r}")
    if engine == "torch" and not standard:
        raise ValueError(f"{name}: engine='torch' runs torch's fused kernels, which have no "
                         "peephole, coupled-gate, reset_after=False or LayerNorm form and no "
                         "weight drop, input or recurrent dropout or zoneout; use "
                         "engine='python' or 'auto'")



class EngineChoice:
    """The part of a layer that picks the engine of each call (mixed into ``_Recurrent``)."""

    def _engine_for(self, record: bool, x: Tensor, T: int, packed: bool) -> str:
        """The engine a call of T steps runs on: "torch", "python" or "compiled"."""
        check_engine(type(self).__name__, self.engine, self._standard)
        if self.engine != "auto":
            return "python" if record and self.engine == "torch" else self.engine
        if not compiled_usable(self.cell, x):
            return "torch" if self._standard and not record else "python"
        if not plain_eager(x):
            # under compile, export, jit.trace, vmap: one choice for every shape (a choice by T
            # or B would pin them in the graph; torch.export refuses a dynamic length that the
            # code specialised), and the operator, which has a batching rule (torch's LSTM has
            # none)
            return "compiled"
        if self.family == "lstm" and self._standard and not (record or packed) and \
                T > AUTO_SHORT_T:
            if bf16_products(self.cell, x):
                return "compiled" if step_macs(self.cell, x) >= AUTO_BF16_MACS else "torch"
            if not torch.is_autocast_enabled(x.device.type) and self._training(x) and \
                    trains_faster(x):
                return "compiled"
            return "torch"                     # oneDNN's fused LSTM: level or faster
        return "compiled"

    def _training(self, x: Tensor) -> bool:
        """True when this call records a graph to differentiate (its backward follows)."""
        return torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
