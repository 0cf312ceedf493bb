"""A decoder and its cross-entropy in one step, for large vocabularies.

For h (N, H), a decoder W (V, H), b (V) and targets y (N,):

    z = h W^T + b,    loss = (1/N) sum_n [ log sum_v exp(z_nv) - z_{n,y_n} ]

and with p = softmax(z) the gradients are

    dz = (p - onehot(y)) / N,    dh = dz W,    dW = dz^T h,    db = sum_n dz_n.

``F.cross_entropy(F.linear(h, W, b), y)`` computes the same, but autograd walks back through
log-softmax and the loss separately, filling and re-reading the (N, V) matrix several times; at
Penn Treebank's V = 10,000 that walk was a third of a training step. Here the forward pass
turns the log-probabilities into dz in place, and the backward pass is two matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)   # autocast: float32
    def forward(ctx, h, weight, bias, target):
        z = torch.addmm(bias, h, weight.t())                                # (N, V)
        # in place: the row kernel reads each row before writing it, and a fresh (N, V)
        # output would cost as much again as the softmax itself
        logp = torch._log_softmax(z, 1, False, out=z)
        loss = -logp.gather(1, target[:, None]).mean()
        dz = logp.exp_()                                                    # p, in place
        dz[torch.arange(len(target)), target] -= 1
        ctx.save_for_backward(h, weight, dz)
        return loss

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):
        h, weight, dz = ctx.saved_tensors
        scale = grad / len(h)                     # the 1/N of the mean, times dL/dloss
        dh = torch.mm(dz, weight).mul_(scale) if ctx.needs_input_grad[0] else None
        dw = torch.mm(dz.t(), h * scale) if ctx.needs_input_grad[1] else None
        db = dz.sum(0).mul_(scale) if ctx.needs_input_grad[2] else None
        return dh, dw, db, None


def linear_cross_entropy(h: Tensor, weight: Tensor, bias: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy (nats) of the decoder z = h W^T + b against `target`.

    h (N, H), weight (V, H), bias (V,), target (N,) integer classes in [0, V). Same value and
    gradients as ``F.cross_entropy(F.linear(h, weight, bias), target)``.
    """
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad
                                    or bias.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, bias, target)
    return F.cross_entropy(F.linear(h, weight, bias), target)
