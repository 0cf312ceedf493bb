"""The hand-written BPTT engine: one ``torch.autograd.Function`` walks a whole sequence.

Forward: the input projection of all T steps in one matrix product (the "hoisted" product),
then per step one recurrent product with the gate math of the cell applied in place on that
step's slice of the projection. Backward: the steps in reverse, carrying dL/dh (and dL/dc),
each step writing its pre-activation gradients; then the weight gradients as single products
over all steps. Autograd never records the time loop.

Everything here runs in *processing order*: step s = 0..T-1 is the s-th step the recurrence
takes (a reverse direction is handed a time-flipped input). Variable lengths: at step s only
the first ``batch_sizes[s]`` sequences are active (sorted longest first, as in a PackedSequence);
the others keep their state. batch_sizes is non-increasing for a forward pass over a packed
batch and non-decreasing for a reverse one: rows that join late start from the initial state.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..cells.base import Cell, Weights, matmul_over_steps


def hoisted_input_projection(x: Tensor, w_ih: Tensor, bias: Tensor | None) -> Tensor:
    """W_ih x_t + b for every step at once: (T, B, I) -> (T, B, G*H), one matrix product."""
    T, B, _ = x.shape
    x2 = x.reshape(T * B, -1)
    out = x2.mm(w_ih.t()) if bias is None else torch.addmm(bias, x2, w_ih.t())
    return out.view(T, B, -1)


class StepRecord:
    """Where a traced run leaves the engine's tensors (processing order; see ``lstmkit.trace``)."""

    def __init__(self):
        self.gates = self.hist = self.dhist = None


class SequenceFunction(torch.autograd.Function):
    """apply(cell, batch_sizes, record, x, *states0, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr)

    x (T, B, I); states0 the initial states (B, size_k); returns the state histories
    (T+1, B, size_k), entry 0 the initial state, entry s+1 the state after step s (rows not
    active at step s hold their last state, or the initial state before they start).
    batch_sizes: a list of T ints, or None when every sequence runs all T steps.
    """

    @staticmethod
    def forward(ctx, cell: Cell, batch_sizes, record, x, *args):
        k = len(cell.state_sizes)
        states0, w = args[:k], Weights(*args[k:])
        T, B, _ = x.shape
        packed = batch_sizes is not None
        bs = batch_sizes if packed else [B] * T
        alloc = torch.zeros if packed else torch.empty        # padding rows must stay finite

        gates = hoisted_input_projection(x, w.w_ih, cell.hoisted_bias(w))   # (T, B, G*H)
        hist = []
        for s0 in states0:
            h = s0.new_empty((T + 1, *s0.shape))              # (T+1, B, size)
            h[0] = s0
            if packed:
                h[1:] = s0
            hist.append(h)
        bufs = [alloc(T, B, width, dtype=x.dtype, device=x.device) for width in cell.step_buffers]

        for s in range(T):
            n = bs[s]
            cell.forward_step(w, gates[s, :n],
                              [h[s, :n] for h in hist], [h[s + 1, :n] for h in hist],
                              [b[s, :n] for b in bufs])

        ctx.cell, ctx.bs, ctx.packed, ctx.record = cell, bs, packed, record
        ctx.save_for_backward(x, gates, *hist, *bufs, *args[k:])
        if record is not None:
            record.gates, record.hist = gates, hist
        return tuple(hist)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_hist):
        cell, bs, packed, record = ctx.cell, ctx.bs, ctx.packed, ctx.record
        k = len(cell.state_sizes)
        saved = ctx.saved_tensors
        x, gates = saved[0], saved[1]
        hist = saved[2 : 2 + k]
        nb = len(cell.step_buffers)
        bufs = saved[2 + k : 2 + k + nb]
        w = Weights(*saved[2 + k + nb :])
        T, B, _ = x.shape
        alloc = torch.zeros if packed else torch.empty

        dgates = alloc(gates.shape, dtype=gates.dtype, device=gates.device)   # (T, B, G*H)
        gbufs = [alloc(T, B, width, dtype=x.dtype, device=x.device) for width in cell.grad_buffers]
        # dhist[k][s]: total dL/d(state k after step s), filled as BPTT reaches it
        dhist = [alloc(T, B, size, dtype=x.dtype, device=x.device) for size in cell.state_sizes]
        carry = [torch.zeros(B, size, dtype=x.dtype, device=x.device) for size in cell.state_sizes]
        grad_hist = [g if g is not None else torch.zeros_like(h) for g, h in zip(grad_hist, hist)]

        for s in range(T - 1, -1, -1):
            n = bs[s]
            dnew = [torch.add(g[s + 1, :n], c[:n], out=d[s, :n])
                    for g, c, d in zip(grad_hist, carry, dhist)]
            cell.backward_step(w, gates[s, :n],
                               [h[s, :n] for h in hist], [h[s + 1, :n] for h in hist],
                               [b[s, :n] for b in bufs], dnew, dgates[s, :n],
                               [b[s, :n] for b in gbufs], [c[:n] for c in carry])

        need = ctx.needs_input_grad
        dstates0 = [c + g[0] if need[4 + j] else None
                    for j, (c, g) in enumerate(zip(carry, grad_hist))]
        dx = dgates.reshape(T * B, -1).mm(w.w_ih).view_as(x) if need[3] else None
        dw_ih = matmul_over_steps(dgates, x)
        rec = cell.recurrent_grads(w, hist, bufs, dgates, dhist, gbufs)
        db_ih = db_hh = None
        if w.b_ih is not None:
            db_ih = dgates.sum((0, 1))
            db_hh = db_ih if cell.bias_hh_hoisted else rec.b_hh
        if record is not None:
            record.dhist = dhist
        return (None, None, None, dx, *dstates0, dw_ih, rec.w_hh, db_ih, db_hh, rec.w_ch, rec.w_hr)


def run_sequence(cell: Cell, x: Tensor, states0, weights: Weights, batch_sizes=None,
                 record: StepRecord | None = None) -> tuple[Tensor, ...]:
    """Run ``cell`` over x (T, B, I) in processing order; returns the state histories."""
    return SequenceFunction.apply(cell, batch_sizes, record, x, *states0, weights.w_ih,
                                  weights.w_hh, weights.b_ih, weights.b_hh, weights.w_ch,
                                  weights.w_hr)
