"""The engines as torch operators: ``lstmkit::sequence`` and ``lstmkit::sequence_backward``.

One registration serves every cell and variant: the cell travels as its seven-int ``spec``
(``Cell.spec``), the engine as a name ("python" or "compiled"). Each operator has a fake
implementation that derives output shapes from the spec, so ``torch.compile``,
``torch.export`` and ``torch.jit.trace`` see one opaque, well-typed call per layer and
direction instead of a Python time loop they would unroll or freeze.

    sequence(x (T, B, I), states0 [(B, size_k)], w_ih, w_hh, b_ih?, b_hh?, w_ch?, w_hr?, spec,
             batch_sizes, engine, bf16_autocast) -> (hist [(T+1, B, size_k)], gates, bufs)

hist[k] row 0 is the initial state, row s+1 the state after step s (processing order); gates
(T, B, G*H) and bufs (the cell's step buffers) are what the backward reads, not differentiable.

Autograd: the backward is ``sequence_backward``, the hand-written BPTT. Where a graph of the
gradient is asked for (``create_graph=True``, ``torch.func.grad`` and friends), the gradient is
instead taken through ``lstmkit.engine.reference``, the same equations in differentiable ops,
so second derivatives are exact rather than silently zero. ``vmap``: over the batch of x and
the initial states the vmapped rows join the batch (one call); anything else (batched weights,
packed batches, the backward) runs one call per vmapped slice.

The layers call ``sequence``: the operator where torch traces or transforms the call, and in
plain eager code (and for traces) ``SequenceFunction``, the same kernels and the same backward
rule without the dispatcher's cost.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch._C._functorch import TransformType
from torch.autograd import forward_ad

from ..cells import cell_from_spec
from ..cells.base import Weights, transformed
from .compiled import autocast_bf16, compiled_backward, compiled_forward, fallback_reason, products
from .reference import reference_sequence
from .sequence import Masks, StepRecord, sequence_backward, sequence_forward

ENGINES = ("python", "compiled")
_lib = torch.library.Library("lstmkit", "DEF")          # kept alive: the ops live with it
_lib.define("sequence(Tensor x, Tensor[] states0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
            "Tensor? b_hh, Tensor? w_ch, Tensor? w_hr, int[] spec, int[] batch_sizes, "
            "str engine, bool bf16_autocast) -> (Tensor[] hist, Tensor gates, Tensor[] bufs)")
_lib.define("sequence_backward(Tensor?[] grad_hist, Tensor x, Tensor gates, Tensor[] hist, "
            "Tensor[] bufs, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_ch, "
            "Tensor? w_hr, int[] spec, int[] batch_sizes, bool[] needs, str engine, "
            "bool bf16_autocast) -> Tensor[]")
sequence_op = torch.ops.lstmkit.sequence.default
sequence_backward_op = torch.ops.lstmkit.sequence_backward.default


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"lstmkit::sequence: engine must be one of {ENGINES}, got {engine!r}")


# ------------------------------------------------------------------ kernels
def _forward(cell, bs, compiled, products, x, states0, weights, record=None, masks=None):
    """(gates, hist, bufs) on the named engine; bs None or a list of T batch sizes."""
    if compiled:
        return compiled_forward(cell, bs, x, states0, weights, products, record, masks)
    with torch.autocast(x.device.type, enabled=False):          # float32 math, as documented
        return sequence_forward(cell, bs, x, states0, Weights(*weights), record, masks)


def _backward_kernel(cell, bs, compiled, products, x, gates, hist, bufs, weights, grad_hist,
                     needs, record=None, masks=None):
    """[dx, dstates0..., dw_ih, ..., dw_hr] by the hand-written BPTT, None where not needed."""
    if compiled:
        return compiled_backward(cell, bs, x, gates, hist, bufs, weights, grad_hist, needs,
                                 products, record, masks)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        return sequence_backward(cell, bs, x, gates, hist, bufs, Weights(*weights), grad_hist,
                                 needs, record, masks)


def _products(engine, cell, x, bf16_autocast):
    """The compiled engine's product choice, made where x's sizes are concrete."""
    return products(cell, x, bf16_autocast) if engine == "compiled" else (False, False)


def _sequence(x, states0, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr, spec, batch_sizes, engine,
              bf16_autocast):
    _check_engine(engine)
    cell = cell_from_spec(spec)
    gates, hist, bufs = _forward(cell, list(batch_sizes) or None, engine == "compiled",
                                 _products(engine, cell, x, bf16_autocast), x, states0,
                                 (w_ih, w_hh, b_ih, b_hh, w_ch, w_hr))
    return list(hist), gates, list(bufs)


def _sequence_backward(grad_hist, x, gates, hist, bufs, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr,
                       spec, batch_sizes, needs, engine, bf16_autocast):
    _check_engine(engine)
    cell = cell_from_spec(spec)
    grads = _backward_kernel(cell, list(batch_sizes) or None, engine == "compiled",
                             _products(engine, cell, x, bf16_autocast), x, gates, hist, bufs,
                             (w_ih, w_hh, b_ih, b_hh, w_ch, w_hr), grad_hist, needs)
    out = [g for g in grads if g is not None]
    # an operator's outputs may not alias: d b_hh is d b_ih where b_hh is hoisted
    return [g.clone() if any(g is o for o in out[:i]) else g for i, g in enumerate(out)]


def _sequence_fake(x, states0, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr, spec, batch_sizes, engine,
                   bf16_autocast):
    _check_engine(engine)
    cell = cell_from_spec(spec)
    T, B = x.shape[0], x.shape[1]
    hist = [x.new_empty((T + 1, B, size)) for size in cell.state_sizes]
    gates = x.new_empty((T, B, cell.num_gates * cell.hidden_size))
    return hist, gates, [x.new_empty((T, B, width)) for width in cell.step_buffers]


def _sequence_backward_fake(grad_hist, x, gates, hist, bufs, w_ih, w_hh, b_ih, b_hh, w_ch, w_hr,
                            spec, batch_sizes, needs, engine, bf16_autocast):
    inputs = [x, *(h[0] for h in hist), w_ih, w_hh, b_ih, b_hh, w_ch, w_hr]
    return [t.new_empty(t.shape) for t, need in zip(inputs, needs) if need and t is not None]


_lib.impl("sequence", _sequence, "CompositeExplicitAutograd")
_lib.impl("sequence_backward", _sequence_backward, "CompositeExplicitAutograd")
torch.library.register_fake("lstmkit::sequence", _sequence_fake, lib=_lib)
torch.library.register_fake("lstmkit::sequence_backward", _sequence_backward_fake, lib=_lib)


# ------------------------------------------------------------------ autograd
def _setup_context(ctx, inputs, output):
    x, states0, *weights = inputs[:8]
    spec, batch_sizes, engine, bf16_autocast = inputs[8:]
    hist, gates, bufs = output
    ctx.mark_non_differentiable(gates, *bufs)
    ctx.set_materialize_grads(False)
    ctx.k = len(states0)
    ctx.args = (spec, batch_sizes, engine, bf16_autocast)
    ctx.needs = [t is not None and t.requires_grad for t in (x, *states0, *weights)]
    _save(ctx, x, states0, weights, gates, hist, bufs)


def _save(ctx, x, states0, weights, gates, hist, bufs) -> None:
    """What both backward rules read, in the order ``_saved`` unpacks."""
    ctx.save_for_backward(x, *states0, *weights, gates, *hist, *bufs)


def _saved(ctx, k: int):
    """(x, states0, weights, gates, hist, bufs) as ``_save`` kept them; k states."""
    saved = ctx.saved_tensors
    return (saved[0], saved[1 : 1 + k], saved[1 + k : 7 + k], saved[7 + k],
            saved[8 + k : 8 + 2 * k], saved[8 + 2 * k :])


def _backward(ctx, grad_hist, grad_gates, grad_bufs):
    k = ctx.k
    x, states0, weights, gates, hist, bufs = _saved(ctx, k)
    spec, batch_sizes, engine, bf16_autocast = ctx.args
    needs = ctx.needs
    grad_hist = list(grad_hist) if grad_hist is not None else [None] * k
    if _reference_wanted(needs, grad_hist):
        grads = reference_grads(cell_from_spec(spec), x, states0, weights, grad_hist,
                                list(batch_sizes) or None, needs, first_row=True)
    else:
        out = iter(sequence_backward_op(
            [None if g is None else g[1:] for g in grad_hist], x, gates, list(hist), list(bufs),
            *weights, spec, batch_sizes, needs, engine, bf16_autocast))
        grads = [next(out) if need and t is not None else None
                 for t, need in zip((x, *states0, *weights), needs)]
        for i, g in enumerate(grad_hist):             # row 0 of hist is the initial state
            if g is not None and grads[1 + i] is not None:
                grads[1 + i] = grads[1 + i] + g[0]
    # no gradient for the non-tensor arguments; an empty list counts as one of tensors
    return (grads[0], list(grads[1 : 1 + k]), *grads[1 + k :], None,
            [] if not batch_sizes else None, None, None)


def _reference_wanted(needs, grads) -> bool:
    """True when a backward must differentiate the reference walk rather than run the kernels:
    under create_graph=True for something that needs a graph (the gradient must itself be
    differentiable), or under a torch.func transform, vmap above all (``is_grads_batched``,
    gradcheck's batched check), which cannot batch the kernels' writes into their own
    buffers."""
    if torch.is_grad_enabled() and (
            any(needs) or any(g is not None and g.requires_grad for g in grads)):
        return True
    batched = (torch._C._functorch.is_batchedtensor, torch._C._functorch.is_legacy_batchedtensor)
    return transformed() or any(
        g is not None and any(f(g) for f in batched) for g in grads)


def reference_grads(cell, x, states0, weights, grad_hist, batch_sizes, needs, first_row=False,
                    masks=None):
    """The backward as a differentiable function of its inputs: the reference walk recomputed
    and differentiated with create_graph, so a gradient of the gradient is exact. grad_hist[k]
    is dL/d(hist[k]) with row 0 (first_row) or dL/d(hist[k][1:])."""
    inputs = (x, *states0, *weights)
    wanted = [t for t, need in zip(inputs, needs) if need]
    pairs = [(i, g) for i, g in enumerate(grad_hist) if g is not None]
    if not wanted or not pairs:
        return [torch.zeros_like(t) if need else None for t, need in zip(inputs, needs)]
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        hist = reference_sequence(cell, x, states0, Weights(*weights), batch_sizes, masks)
        hist = hist if first_row else [h[1:] for h in hist]
        found = torch.autograd.grad([hist[i] for i, _ in pairs], wanted,
                                    [g for _, g in pairs], create_graph=True, allow_unused=True)
    found = iter(found)
    grads = [next(found) if need else None for need in needs]
    return [torch.zeros_like(t) if need and g is None else g
            for t, g, need in zip(inputs, grads, needs)]


torch.library.register_autograd("lstmkit::sequence", _backward, setup_context=_setup_context,
                                lib=_lib)


# ------------------------------------------------------------------ vmap
def _select(arg, dim, i):
    if isinstance(arg, (list, tuple)):
        return [_select(a, d, i) for a, d in zip(arg, dim)] if isinstance(dim, (list, tuple)) \
            else [_select(a, dim, i) for a in arg]
    return arg if dim is None or arg is None else arg.select(dim, i)


def _stack(results):
    first = results[0]
    if isinstance(first, (list, tuple)):
        return [_stack([r[j] for r in results]) for j in range(len(first))]
    return torch.stack(results)


def _zeros_dims(value):
    return [_zeros_dims(v) for v in value] if isinstance(value, (list, tuple)) else 0


def _loop_rule(op):
    """A vmap rule that runs op once per vmapped slice and stacks the results on dim 0."""
    def rule(info, in_dims, *args):
        results = [op(*(_select(a, d, i) for a, d in zip(args, in_dims)))
                   for i in range(info.batch_size)]
        out = _stack(results)
        return out, _zeros_dims(out)
    return rule


def _sequence_vmap(info, in_dims, x, states0, *rest):
    x_dim, s_dims, w_dims = in_dims[0], in_dims[1], in_dims[2:8]
    batch_sizes = rest[7]
    if any(d is not None for d in w_dims) or batch_sizes:
        return _loop_rule(sequence_op)(info, in_dims, x, states0, *rest)
    # the vmapped slices are more rows of one batch: (T, V, B, I) -> (T, V*B, I)
    V = info.batch_size
    x = x.movedim(x_dim, 1) if x_dim is not None else x.unsqueeze(1).expand(-1, V, -1, -1)
    T, _, B, _ = x.shape
    x = x.reshape(T, V * B, -1)
    s_dims = s_dims if isinstance(s_dims, (list, tuple)) else [s_dims] * len(states0)
    states0 = [(s.movedim(d, 0) if d is not None else s.expand(V, *s.shape)).reshape(V * B, -1)
               for s, d in zip(states0, s_dims)]
    hist, gates, bufs = sequence_op(x, states0, *rest)
    unfold = lambda t: t.view(t.shape[0], V, B, t.shape[-1])  # noqa: E731
    return ([unfold(h) for h in hist], unfold(gates), [unfold(b) for b in bufs]), \
        ([1] * len(hist), 1, [1] * len(bufs))


torch.library.register_vmap("lstmkit::sequence", _sequence_vmap, lib=_lib)
torch.library.register_vmap("lstmkit::sequence_backward", _loop_rule(sequence_backward_op),
                            lib=_lib)


# ------------------------------------------------------------------ eager calls
class SequenceFunction(torch.autograd.Function):
    """apply(cell, batch_sizes, compiled, products, record, masks, x, *states0, w_ih, w_hh, b_ih,
    b_hh, w_ch, w_hr) -> hist[k][1:] for each state.

    The operators' kernels and backward rule, called directly: what a plain eager call runs
    (a trip through the dispatcher to a Python operator costs tens of microseconds per call,
    a third of a short training step; benchmarks/bench_operators.py), and every traced run
    (``record`` a StepRecord, filled with every step's tensors)."""

    @staticmethod
    def forward(ctx, cell, batch_sizes, compiled, products, record, masks, x, *args):
        k = len(cell.state_sizes)
        states0, weights = args[:k], args[k:]
        gates, hist, bufs = _forward(cell, batch_sizes, compiled, products, x, states0, weights,
                                     record, masks)
        ctx.set_materialize_grads(False)
        ctx.cell, ctx.batch_sizes, ctx.record, ctx.masks = cell, batch_sizes, record, masks
        ctx.compiled, ctx.products = compiled, products
        _save(ctx, x, states0, weights, gates, hist, bufs)
        return tuple(h[1:] for h in hist)

    @staticmethod
    def backward(ctx, *grad_hist):
        cell = ctx.cell
        x, states0, weights, gates, hist, bufs = _saved(ctx, len(cell.state_sizes))
        needs = ctx.needs_input_grad[6:]
        if _reference_wanted(needs, grad_hist):
            grads = reference_grads(cell, x, states0, weights, grad_hist, ctx.batch_sizes,
                                    needs, masks=ctx.masks)
        else:
            grads = _backward_kernel(cell, ctx.batch_sizes, ctx.compiled, ctx.products, x, gates,
                                     hist, bufs, weights, grad_hist, needs, ctx.record,
                                     ctx.masks)
        return (None, None, None, None, None, None, *grads)


_PLAIN = (torch.Tensor, torch.nn.Parameter, type(None))


def plain_eager(*tensors) -> bool:
    """True when nothing is watching this call: no torch.compile, export or jit tracing, no
    torch.func transform, no dispatch mode (fake tensors, proxies), plain tensors."""
    if torch.compiler.is_compiling():        # first: dynamo cannot trace the calls below
        return False
    if (transformed() or torch._C._len_torch_dispatch_stack()
            or torch.jit.is_tracing()):
        return False
    for t in tensors:                        # a loop: this runs at every call of every layer
        if type(t) not in _PLAIN:
            return False
    return True


# ------------------------------------------------------------------ the layers' entry point
def _differentiating_transform() -> bool:
    """True inside torch.func.grad / vjp / jacrev / jvp (and the like) or forward-mode AD.
    torch 2.13's operator autograd does not run under them, so the call takes the reference
    walk, which they differentiate like any torch code (vmap alone keeps the operator and its
    batching rule)."""
    if torch.compiler.is_compiling():
        return False
    if forward_ad._current_level >= 0:                   # forward-mode AD: dual tensors
        return True
    stack = torch._C._functorch.get_interpreter_stack()
    return bool(stack) and any(
        i.key() in (TransformType.Grad, TransformType.Jvp) for i in stack)


def sequence(cell, x: Tensor, states0, w: Weights, batch_sizes: list[int] | None = None,
             compiled: bool = False, record: StepRecord | None = None,
             masks: Masks | None = None) -> tuple[Tensor, ...]:
    """Run ``cell`` over x (T, B, I) in processing order, on the compiled engine if asked and it
    can run this call (else, warned once, the python engine); returns each state after each
    step, (T, B, size_k). A plain eager call or a traced one (``record``) runs the kernels
    directly; under torch.compile, export, jit.trace or vmap the call is ``lstmkit::sequence``;
    under torch.func's differentiating transforms the reference walk. masks: recurrent dropout
    and zoneout (``Masks``), which the operator does not take: refused where it would run."""
    weights = (w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_ch, w.w_hr)
    masks = masks if masks else None
    if record is None and _differentiating_transform():
        return tuple(h[1:] for h in reference_sequence(cell, x, states0, w, batch_sizes, masks))
    compiled = compiled and fallback_reason(cell, x) is None
    if not compiled and torch.is_autocast_enabled(x.device.type):
        # the python engine computes in float32 under autocast
        x, states0 = x.float(), [s.float() for s in states0]
        weights = tuple(None if t is None else t.float() for t in weights)
        if masks is not None:
            masks = Masks(None if masks.h is None else masks.h.float(),
                          masks.zone and tuple(None if d is None else d.float()
                                               for d in masks.zone))
    if record is not None or plain_eager(x, *states0, *weights):
        prods = products(cell, x) if compiled else (False, False)
        return SequenceFunction.apply(cell, batch_sizes, compiled, prods, record, masks, x,
                                      *states0, *weights)
    if masks is not None:
        raise NotImplementedError(
            "lstmkit: recurrent_dropout and zoneout run in eager mode only; torch.compile, "
            "torch.export, jit.trace and vmap see the lstmkit::sequence operator, which has no "
            "masks (compile the rest of the model, or train without them there)")
    hist, _, _ = sequence_op(x, list(states0), *weights, cell.spec(), batch_sizes or [],
                             "compiled" if compiled else "python", autocast_bf16())
    return tuple(h[1:] for h in hist)
