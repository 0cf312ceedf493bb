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

from ..cells.base import Cell, Weights, matmul_over_steps
from .workspace import scratch


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


def step_views(t: Tensor, bs: list[int]) -> list[Tensor]:
    """t[s, :bs[s]] for every step s, made once per sequence rather than once per step."""
    B = t.shape[1]
    return [v if n == B else v[:n] for v, n in zip(t.unbind(0), bs)]


def per_step(tensors, bs: list[int]) -> list[tuple]:
    """For each step s, the tuple (t[s, :bs[s]] for t in tensors)."""
    if not tensors:
        return [()] * len(bs)
    return list(zip(*[step_views(t, bs) for t in tensors]))


def sequence_forward(cell: Cell, batch_sizes, x: Tensor, states0, w: Weights,
                     record: StepRecord | None = None):
    """The forward walk: returns (gates, hist, bufs).

    x (T, B, I); states0 the initial states (B, size_k). gates (T, B, G*H) the activated gates;
    hist[k] (T+1, B, size_k) the state k before the first step (row 0) and after each step s
    (row s+1); bufs the cell's step buffers (T, B, width). batch_sizes: a list of T ints, or
    None when every sequence runs all T steps; rows not active at step s hold the initial state.
    """
    T, B, _ = x.shape
    packed = batch_sizes is not None
    bs = batch_sizes if packed else [B] * T
    alloc = torch.zeros if packed else torch.empty            # padding rows must stay finite

    gates = hoisted_input_projection(x, w.w_ih, cell.hoisted_bias(w))   # (T, B, G*H)
    hist = []
    for s0 in states0:
        h = s0.new_empty((T + 1, *s0.shape))                  # (T+1, B, size)
        h[0] = s0
        if packed:
            h[1:] = s0
        hist.append(h)
    bufs = [alloc(T, B, width, dtype=x.dtype, device=x.device) for width in cell.step_buffers]

    cell.prepare(w, forward=True)
    steps = zip(per_step(cell.blocks(gates), bs), per_step([h[:-1] for h in hist], bs),
                per_step([h[1:] for h in hist], bs), per_step(bufs, bs))
    for gates_t, prev, new, buf in steps:
        cell.forward_step(w, gates_t, prev, new, buf)
    if record is not None:
        record.gates, record.hist = gates, hist
    return gates, hist, bufs


def sequence_backward(cell: Cell, batch_sizes, x: Tensor, gates: Tensor, hist, bufs,
                      w: Weights, grad_hist, needs, record: StepRecord | None = None):
    """The backward walk: dL/d(inputs) from dL/d(states after each step), grad_hist[k]
    (T, B, size_k) or None. needs: which of [x, states0..., w_ih, w_hh, b_ih, b_hh, w_ch, w_hr]
    want a gradient. Returns [dx, dstates0..., dw_ih, dw_hh, db_ih, db_hh, dw_ch, dw_hr], None
    where not needed or absent."""
    k = len(cell.state_sizes)
    T, B, _ = x.shape
    packed = batch_sizes is not None
    bs = batch_sizes if packed else [B] * T
    like = {"dtype": x.dtype, "device": x.device, "zero": packed}   # padding rows: zero

    def buffer(name, width, keep=False):        # (T, B, width); keep: it outlives backward
        if keep:
            return (torch.zeros if packed else torch.empty)(T, B, width, dtype=x.dtype,
                                                             device=x.device)
        return scratch(name, (T, B, width), **like)

    dgates = buffer("dgates", gates.shape[-1])                                # (T, B, G*H)
    gbufs = [buffer(f"grad_buffer{i}", width) for i, width in enumerate(cell.grad_buffers)]
    # dhist[k][s]: dL/d(state k after step s). Step s+1 writes its part (through the
    # recurrence) there; step s adds what came from outside and completes it to the total.
    dhist = [buffer(f"dstate{i}", size, keep=record is not None)
             for i, size in enumerate(cell.state_sizes)]
    for d in dhist:
        d[-1].zero_()
    dstates0 = [torch.zeros(B, size, dtype=x.dtype, device=x.device)
                for size in cell.state_sizes]

    dnew_steps = per_step(dhist, bs)
    dprev_steps = [tuple(d[: bs[0]] for d in dstates0)] + \
        per_step([d[:-1] for d in dhist], bs[1:])                 # where step s writes dL/d(prev)
    external = [(i, step_views(g, bs)) for i, g in enumerate(grad_hist) if g is not None]
    cell.prepare(w, forward=False)
    steps = list(zip(per_step(cell.blocks(gates), bs), per_step([h[:-1] for h in hist], bs),
                     per_step([h[1:] for h in hist], bs), per_step(bufs, bs), dnew_steps,
                     per_step(cell.blocks(dgates), bs), per_step(gbufs, bs), dprev_steps))
    for s in range(T - 1, -1, -1):
        gates_t, prev, new, buf, dnew, dgates_t, gbuf, dprev = steps[s]
        for i, g in external:
            dnew[i].add_(g[s])
        cell.backward_step(w, gates_t, prev, new, buf, dnew, dgates_t, gbuf, dprev)
        if s and bs[s - 1] < bs[s]:
            # rows that start at step s (a reverse pass over a packed batch): their dprev
            # is dL/d(initial state)
            for d, d0 in zip(dhist, dstates0):
                d0[bs[s - 1] : bs[s]] = d[s - 1, bs[s - 1] : bs[s]]
                d[s - 1, bs[s - 1] : bs[s]] = 0

    W = 1 + k                                                   # index of w_ih in needs
    dx = dgates.reshape(T * B, -1).mm(w.w_ih).view_as(x) if needs[0] else None
    dw_ih = matmul_over_steps(dgates, x) if needs[W] else None
    rec = cell.recurrent_grads(w, hist, bufs, dgates, dhist, gbufs)
    db_ih = db_hh = None
    if w.b_ih is not None and (needs[W + 2] or needs[W + 3]):
        db_ih = dgates.sum((0, 1)) if rec.b_ih is None else rec.b_ih
        db_hh = db_ih if cell.bias_hh_hoisted else rec.b_hh
    if record is not None:
        record.dhist = dhist
    grads = [dx, *dstates0, dw_ih, rec.w_hh, db_ih, db_hh, rec.w_ch, rec.w_hr]
    return [g if need else None for g, need in zip(grads, needs)]
