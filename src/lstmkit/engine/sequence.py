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

from dataclasses import dataclass

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


@dataclass
class Masks:
    """The regularisers that act inside the recurrence, for one call (None where off).

    h (B, P): recurrent dropout (Gal and Ghahramani 2016), one mask per sequence; the recurrent
    products see r_{t-1} = m * h_{t-1} at every step (entries 0 or 1/(1-p)). Where h_{t-1} enters
    the step only through W_hh (``Cell.h_products == "only"``) the engine hands the cell r_{t-1}
    as h_{t-1}; a cell with ``h_products == "slot"`` gets r_{t-1} as an extra last entry of prev.
    zone[k] (T, B, size_k) or None, per state: zoneout (Krueger et al. 2017), s_t = d_t * s_{t-1}
    + (1 - d_t) * s~_t with s~_t what the cell computed; d_t in {0, 1} in training, the
    probability z (an expanded constant) in evaluation.
    """

    h: Tensor | None = None
    zone: tuple[Tensor | None, ...] | None = None

    def __bool__(self) -> bool:
        return self.h is not None or bool(self.zone and any(d is not None for d in self.zone))


def _recurrent_input(cell: Cell, prev: tuple, r: Tensor | None) -> tuple:
    """prev as the cell's step reads it, r the masked h_{t-1} (or None)."""
    if r is None:
        return prev
    return (r, *prev[1:]) if cell.h_products == "only" else (*prev, r)


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
                     record: StepRecord | None = None, masks: Masks | None = None):
    """The forward walk: returns (gates, hist, bufs).

    x (T, B, I); states0 the initial states (B, size_k). gates (T, B, G*H) the activated gates;
    hist[k] (T+1, B, size_k) the state k before the first step (row 0) and after each step s
    (row s+1); bufs the cell's step buffers (T, B, width), then, with ``masks``, the masked
    h_{t-1} of each step (T, B, P) and the states before zoneout (T, B, size_k) of each zoned
    state. batch_sizes: a list of T ints, or None when every sequence runs all T steps; rows not
    active at step s hold the initial state.
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
    h_mask, zone, rh, raw = _mask_buffers(cell, masks, hist, alloc)

    cell.prepare(w, forward=True)
    steps = zip(per_step(cell.blocks(gates), bs), per_step([h[:-1] for h in hist], bs),
                per_step([h[1:] for h in hist], bs), per_step(bufs, bs))
    if not masks:
        for gates_t, prev, new, buf in steps:
            cell.forward_step(w, gates_t, prev, new, buf)
    else:
        rh_steps = step_views(rh, bs) if rh is not None else [None] * T
        raw_steps = per_step([r for r in raw if r is not None], bs)
        for s, (gates_t, prev, new, buf) in enumerate(steps):
            n = bs[s]
            r = None if rh is None else torch.mul(prev[0], h_mask[:n], out=rh_steps[s])
            raws = iter(raw_steps[s])
            out = tuple(v if d is None else next(raws) for v, d in zip(new, zone))
            cell.forward_step(w, gates_t, _recurrent_input(cell, prev, r), out, buf)
            for p, v, o, d in zip(prev, new, out, zone):      # s_t = s~_t + d_t (s_{t-1} - s~_t)
                if d is not None:
                    torch.sub(p, o, out=v)
                    v.mul_(d[s, :n]).add_(o)
        bufs = bufs + ([rh] if rh is not None else []) + [r for r in raw if r is not None]
    if record is not None:
        record.gates, record.hist = gates, hist
    return gates, hist, bufs


def _mask_buffers(cell: Cell, masks: Masks | None, hist, alloc):
    """(h mask, zone per state, masked-h buffer (T, B, P), pre-zoneout buffers per state)."""
    k = len(cell.state_sizes)
    if not masks:
        return None, (None,) * k, None, [None] * k
    zone = tuple(masks.zone) if masks.zone else (None,) * k
    like = hist[0]
    T, B = like.shape[0] - 1, like.shape[1]
    rh = None if masks.h is None else alloc(T, B, like.shape[2], dtype=like.dtype,
                                            device=like.device)
    raw = [None if d is None else alloc(T, B, h.shape[2], dtype=h.dtype, device=h.device)
           for d, h in zip(zone, hist)]
    return masks.h, zone, rh, raw


def _split_bufs(cell: Cell, bufs, masks: Masks | None):
    """(the cell's step buffers, masked-h buffer or None, pre-zoneout buffer per state or None)
    from what ``sequence_forward`` returned."""
    k, m = len(cell.state_sizes), len(cell.step_buffers)
    if not masks:
        return list(bufs), None, [None] * k
    extra = iter(bufs[m:])
    rh = next(extra) if masks.h is not None else None
    zone = tuple(masks.zone) if masks.zone else (None,) * k
    return list(bufs[:m]), rh, [None if d is None else next(extra) for d in zone]


def sequence_backward(cell: Cell, batch_sizes, x: Tensor, gates: Tensor, hist, bufs,
                      w: Weights, grad_hist, needs, record: StepRecord | None = None,
                      masks: Masks | None = None):
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
    bufs, rh, raw = _split_bufs(cell, bufs, masks)
    h_mask = masks.h if masks else None
    zone = tuple(masks.zone) if masks and masks.zone else (None,) * k
    # the states each step computed and dL/d(them): before zoneout where it acts
    new_all = [h[1:] if r is None else r for h, r in zip(hist, raw)]
    draw = [None if d is None else buffer(f"dstate_raw{i}", d.shape[-1])
            for i, d in enumerate(zone)]
    dnew_all = [dh if dr is None else dr for dh, dr in zip(dhist, draw)]
    prev_all = _recurrent_input(cell, [h[:-1] for h in hist], rh)
    slot = h_mask is not None and cell.h_products == "slot"
    drh = buffer("dstate_masked", rh.shape[-1]) if slot else None

    cell.prepare(w, forward=False)
    steps = list(zip(per_step(cell.blocks(gates), bs), per_step(prev_all, bs),
                     per_step(new_all, bs), per_step(bufs, bs), dnew_steps,
                     per_step(dnew_all, bs), per_step(cell.blocks(dgates), bs),
                     per_step(gbufs, bs), dprev_steps))
    drh_steps = step_views(drh, bs) if slot else None
    zoned = any(d is not None for d in zone)
    for s in range(T - 1, -1, -1):
        gates_t, prev, new, buf, dnew, dcell, dgates_t, gbuf, dprev = steps[s]
        for i, g in external:
            dnew[i].add_(g[s])
        n = bs[s]
        if zoned:
            for dn, dr, d in zip(dnew, dcell, zone):   # dL/ds~_t = (1 - d_t) dL/ds_t
                if d is not None:
                    torch.mul(dn, d[s, :n], out=dr)
                    torch.sub(dn, dr, out=dr)
        dprev_cell = dprev
        if slot:
            dprev_cell = (*dprev, drh_steps[s].zero_())
        cell.backward_step(w, gates_t, prev, new, buf, dcell, dgates_t, gbuf, dprev_cell)
        if h_mask is not None:                          # r_{t-1} = m * h_{t-1}
            if slot:
                dprev[0].addcmul_(drh_steps[s], h_mask[:n])
            else:
                dprev[0].mul_(h_mask[:n])
        if zoned:
            for dp, dn, d in zip(dprev, dnew, zone):   # s_{t-1} kept with weight d_t
                if d is not None:
                    dp.addcmul_(dn, d[s, :n])
        if s and bs[s - 1] < bs[s]:
            # rows that start at step s (a reverse pass over a packed batch): their dprev
            # is dL/d(initial state)
            for d, d0 in zip(dhist, dstates0):
                d0[bs[s - 1] : bs[s]] = d[s - 1, bs[s - 1] : bs[s]]
                d[s - 1, bs[s - 1] : bs[s]] = 0

    W = 1 + k                                                   # index of w_ih in needs
    dx = dgates.reshape(T * B, -1).mm(w.w_ih).view_as(x) if needs[0] else None
    dw_ih = matmul_over_steps(dgates, x) if needs[W] else None
    rec = cell.recurrent_grads(w, prev_all, new_all, bufs, dgates, dnew_all, gbufs)
    db_ih = db_hh = None
    if w.b_ih is not None and (needs[W + 2] or needs[W + 3]):
        db_ih = dgates.sum((0, 1)) if rec.b_ih is None else rec.b_ih
        db_hh = db_ih if cell.bias_hh_hoisted else rec.b_hh
    if record is not None:
        record.dhist = dhist
    grads = [dx, *dstates0, dw_ih, rec.w_hh, db_ih, db_hh, rec.w_ch, rec.w_hr]
    return [g if need else None for g, need in zip(grads, needs)]
