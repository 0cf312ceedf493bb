"""The reference walk: a whole sequence in plain differentiable torch ops, one step at a time.

Slow and simple on purpose: no buffers, nothing in place, so autograd records every step and can
differentiate the gradient again. The operators fall back to it where a graph of the gradient
is asked for (``create_graph=True``, ``torch.func`` transforms); the engines are tested against
it. Same contract as ``lstmkit.engine.sequence.sequence_forward``'s state histories: hist[k]
(T+1, B, size_k), row 0 the initial state, rows not active at a step holding the initial state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.base import Cell, Weights


def zoned(new: tuple, prev: tuple, keep: tuple) -> tuple:
    """Zoneout: each state s_t = s~_t + d (s_{t-1} - s~_t), d a 0/1 mask (training) or z, its
    expectation (evaluation); None: the state as the cell computed it."""
    return tuple(v if d is None else v + d * (p - v) for v, p, d in zip(new, prev, keep))


def reference_sequence(cell: Cell, x: Tensor, states0, w: Weights,
                       batch_sizes: list[int] | None = None, masks=None) -> list[Tensor]:
    """hist[k] (T+1, B, size_k) for x (T, B, I) and states0[k] (B, size_k), in processing order;
    at step s only the first batch_sizes[s] rows are active. masks: recurrent dropout and
    zoneout (``lstmkit.engine.sequence.Masks``), or None."""
    T, B, _ = x.shape
    bias = cell.hoisted_bias(w)
    xw = x.matmul(w.w_ih.t())                                           # (T, B, G*H)
    if bias is not None:
        xw = xw + bias
    states0 = tuple(states0)
    hist = [[s] for s in states0]
    prev = states0
    h_mask = masks.h if masks else None
    zone = masks.zone if masks and masks.zone else (None,) * len(states0)
    for s in range(T):
        n = B if batch_sizes is None else batch_sizes[s]
        p = tuple(q[:n] for q in prev)
        seen = p
        if h_mask is not None:                   # the products see m * h_{t-1}
            r = p[0] * h_mask[:n]
            seen = (r, *p[1:]) if cell.h_products == "only" else (*p, r)
        new = cell.reference_step(w, xw[s, :n], seen)
        new = zoned(new, p, tuple(None if d is None else d[s, :n] for d in zone))
        if n < B:
            new = tuple(torch.cat([v, s0[n:]]) for v, s0 in zip(new, states0))
        for h, v in zip(hist, new):
            h.append(v)
        prev = new
    return [torch.stack(h) for h in hist]
