"""Gradient flow through time, measured: how much of a gradient that enters at step T reaches
step t = T - k, for the RNN, the LSTM, the GRU and the cells after 2024.

Time indices: h_0 (and c_0) is the initial state, h_t the state after the t-th input, t = 1..T;
``trace.steps[l][d].h[t - 1]`` is h_t. "Steps back" k = T - t.

The products this module measures:

    RNN   h_t = tanh(a_t),  a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
          dh_T/dh_t = prod_{s=T..t+1} diag(1 - h_s^2) W_hh          (B, H, H)
          ||dh_T/dh_t|| <= prod ||W_hh||: shrinks (or grows) geometrically in k
    LSTM  c_t = f_t * c_{t-1} + i_t * g_t
          along the cell state alone (h_{t-1} held fixed in the gates):
          dc_T/dc_t = prod_{s=t+1..T} f_s                           (B, H), a diagonal
    minGRU, minLSTM   h_t = a_t h_{t-1} + b_t, a_t from x_t alone:
          dh_T/dh_t = diag(prod_{s=t+1..T} a_s)
    mLSTM h_{t-1} does not enter step t; the memory carries the gradient back:
          dL/dC_t = f'_{t+1} dL/dC_{t+1} + (what h_t's own loss puts there)

Inputs ``x`` are in the layer's own layout ((L, N, H_in), (N, L, H_in) with batch_first, or
(L, H_in) unbatched). Everything is computed in the layer's dtype; gradients of long sequences
become very small or very large, so use float64 layers (``dtype=torch.float64``) to read them
far back. Returned curves are numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..cells import registry
from ..init import orthogonal_recurrent_
from ..layers import LSTM, RNN, _Recurrent, make_layer, minGRU, minLSTM, mLSTM

TABLE_STEPS_BACK = (1, 10, 25, 50, 100)


# ----------------------------------------------------------------------------- layouts
def _to_time_major(layer, x: Tensor) -> Tensor:
    """The layer's layout -> (T, B, F)."""
    if x.dim() == 2:                                             # unbatched (L, F)
        return x.unsqueeze(1)
    return x.transpose(0, 1) if layer.batch_first else x


def _to_layer_layout(layer, x: Tensor) -> Tensor:
    """(T, B, F) -> the layer's batched layout."""
    return x.transpose(0, 1) if layer.batch_first else x


def _check_single(layer, what: str, family=(_Recurrent, mLSTM, minGRU, minLSTM)) -> None:
    if not isinstance(layer, family):
        names = " or ".join("a layer of a per-step cell (lstmkit.LSTM, GRU, RNN, sLSTM, "
                            "Recurrent)" if cls is _Recurrent else f"lstmkit.{cls.__name__}"
                            for cls in family)
        raise TypeError(f"{what}: expected {names}, got {type(layer).__name__}")
    if layer.num_layers != 1 or layer.bidirectional:
        raise ValueError(f"{what}: needs a one-layer, one-direction layer, got num_layers="
                         f"{layer.num_layers}, bidirectional={layer.bidirectional}")


def _check_t(t: int, T: int, what: str) -> None:
    if not 0 <= t <= T:
        raise ValueError(f"{what}: t must be in 0..T = 0..{T}, got {t}")


def _batched_jacobian(out: Tensor, inp: Tensor) -> Tensor:
    """d out[b] / d inp[b] for every batch row b: (B, m) and (B, n) -> (B, m, n), one backward
    pass per output unit. Valid because the rows of a batch never interact."""
    rows = [torch.autograd.grad(out[:, j].sum(), inp, retain_graph=True)[0]
            for j in range(out.shape[1])]
    return torch.stack(rows, 1)


# ----------------------------------------------------------------------------- per-step gradients
def _last_step_sum(layer) -> Callable[[Tensor], Tensor]:
    """The default loss: the sum of the last step's output, so the gradient enters at T only."""
    return lambda output: _to_time_major(layer, output)[-1].sum()


def _traced_gradients(layer, x: Tensor, loss_fn=None):
    """Trace ``layer`` on x with initial states that take gradients, backpropagate the loss.
    Returns (trace, loss, [dL/dh_0, dL/dc_0], parameter gradients); no ``.grad`` is touched."""
    if not isinstance(x, Tensor):
        raise TypeError(f"gradient flow: expected x as a torch.Tensor, got {type(x).__name__}")
    loss_fn = loss_fn or _last_step_sum(layer)
    B = None if x.dim() == 2 else x.shape[0 if layer.batch_first else 1]
    LD = layer.num_layers * layer.num_directions
    params = [p for p in layer.parameters() if p.requires_grad]
    with torch.enable_grad():
        states0 = [x.new_zeros(shape, requires_grad=True) for shape in _state_shapes(layer, B)]
        hx = tuple(states0) if len(states0) > 1 else states0[0]
        trace = layer.trace(x, hx)
        loss = loss_fn(trace.output)
        grads = torch.autograd.grad(loss, [*states0, *params], allow_unused=True)
    dstates0 = [(torch.zeros_like(s) if g is None else g).reshape(LD, B or 1, -1)
                for s, g in zip(states0, grads)]                 # None: the loss ignores s
    return trace, loss.detach(), dstates0, list(grads[len(states0):])


def _state_shapes(layer, B: int | None) -> list[tuple[int, ...]]:
    """The initial states' shapes, (layers * directions, B, ...) each (no B: unbatched)."""
    if hasattr(layer, "cell"):
        LD = layer.num_layers * layer.num_directions
        return [(LD, size) if B is None else (LD, B, size) for size in layer.cell.state_sizes]
    if B is None:
        raise ValueError(f"gradient flow: {type(layer).__name__} needs a batched 3-D input here")
    return layer.state_shapes(B)


def _h_in_state(layer) -> bool:
    """Whether h_{t-1} enters step t (every cell but the mLSTM's: h_t = o_t * C_t q_t / ...)."""
    return not isinstance(layer, mLSTM)


def _mean_norms(g: Tensor) -> np.ndarray:
    """(..., B, F) -> batch-mean Euclidean norm (...,)."""
    return g.norm(dim=-1).mean(-1).cpu().double().numpy()


def gradient_norms(layer, x: Tensor, loss_fn: Callable[[Tensor], Tensor] | None = None) -> dict:
    """Run ``layer.trace(x)``, backpropagate a loss, and report how large dL/dh_t and dL/dc_t are.

    loss_fn(output) -> scalar, output as the layer returns it; default: the sum of the last
    step's output (the gradient enters at step T only; for a reverse direction that is its
    first step). Parameters' ``.grad`` are left untouched.

    Returns a dict of numpy arrays, L = num_layers, D = directions:

        grad_h   (L, D, T)  mean over the batch of ||dL/dh_t||, entry t - 1 for h_t
        grad_c   (L, D, T)  the same for dL/dc_t (LSTM; None otherwise)
        grad_h0  (L, D)     mean ||dL/dh_0|| of each layer and direction's initial state
        grad_c0  (L, D)     the same for c_0 (LSTM; None otherwise)
        loss     float

    For an mLSTM (no h_{t-1} in step t: grad_h is the output's gradient alone, grad_h0 None)
    also grad_C, grad_n (L, D, T) and grad_C0, grad_n0 (L, D): the same for the matrix memory
    C_t (Frobenius norm over its heads) and the normaliser n_t, what BPTT carries.
    """
    trace, loss, dstates0, _ = _traced_gradients(layer, x, loss_fn)
    return _norms_of(layer, trace, loss, dstates0)


def _norms_of(layer, trace, loss: Tensor, dstates0: list[Tensor]) -> dict:
    """``gradient_norms``' dict from a traced run after its backward pass."""
    L, D = layer.num_layers, layer.num_directions

    def per_step(grad_of):
        return np.stack([np.stack([_mean_norms(grad_of(s).flatten(2)) for s in steps])
                         for steps in trace.steps])
    grad_h = per_step(lambda s: s.grad_h)
    if not _h_in_state(layer):                  # the mLSTM: (C, n, m), BPTT through C and n
        out = {"grad_h": grad_h, "grad_c": None, "grad_h0": None, "grad_c0": None}
        for k, name in enumerate(("C", "n")):
            out[f"grad_{name}"] = per_step(lambda s, name=name: s.grad_states[name])
            out[f"grad_{name}0"] = _mean_norms(dstates0[k]).reshape(L, D)
        return {**out, "loss": float(loss)}
    is_lstm = len(dstates0) == 2
    return {"grad_h": grad_h, "grad_c": per_step(lambda s: s.grad_c) if is_lstm else None,
            "grad_h0": _mean_norms(dstates0[0]).reshape(L, D),
            "grad_c0": _mean_norms(dstates0[1]).reshape(L, D) if is_lstm else None,
            "loss": float(loss)}


def steps_back_curve(per_step: np.ndarray, initial: float) -> np.ndarray:
    """A one-direction curve over t = 1..T plus the initial state's value -> the same over
    k = 0..T steps back (entry k is t = T - k)."""
    return np.concatenate([np.asarray(per_step)[::-1], [initial]])


# ----------------------------------------------------------------------------- one step, again
def _reference_step(layer, x_t: Tensor, prev: tuple) -> tuple:
    """One step of a one-layer ``layer`` from its parameters: W_ih x_t + b, then the cell's own
    equations in plain differentiable ops (``Cell.reference_step``), not the engine that
    ``layer.trace`` runs. prev: the states at t-1; returns the states at t."""
    w = layer.weights(0)
    xw = x_t @ w.w_ih.t()
    bias = layer.cell.hoisted_bias(w)
    return layer.cell.reference_step(w, xw if bias is None else xw + bias, prev)


# ----------------------------------------------------------------------------- RNN: W_hh products
def rnn_jacobian_product(rnn: RNN, x: Tensor, t: int) -> tuple[Tensor, Tensor]:
    """dh_T/dh_t of a one-layer tanh ``lstmkit.RNN`` (initial state zero), two ways.

    formula:  prod_{s=T..t+1} diag(1 - h_s^2) W_hh (latest step leftmost), with h_s from
              ``rnn.trace(x)``; t = T gives the identity.
    autograd: an independent loop over the cell's reference step (plain tensor operations)
              runs h_1..h_t, makes h_t a leaf, runs on to h_T and takes the Jacobian of h_T
              w.r.t. h_t for each batch row.

    Returns (formula, autograd), each (B, H, H) with [b, j, k] = dh_T[b, j] / dh_t[b, k], in the
    layer's dtype (in float64 they agree to ~1e-15).
    """
    what = "rnn_jacobian_product"
    _check_single(rnn, what, (RNN,))
    if rnn.nonlinearity != "tanh":
        raise ValueError(f"{what}: the formula is for a tanh RNN, got nonlinearity="
                         f"{rnn.nonlinearity!r}")
    x_tm = _to_time_major(rnn, x)
    T, B = x_tm.shape[:2]
    _check_t(t, T, what)
    H = rnn.hidden_size
    with torch.no_grad():
        h = _to_time_major(rnn, rnn.trace(x).output)           # (T, B, H): h[s - 1] is h_s
        W = rnn.weight_hh_l0                                    # (H, H)
        formula = torch.eye(H, dtype=h.dtype, device=h.device).expand(B, H, H)
        for s in range(t + 1, T + 1):
            formula = (1 - h[s - 1] ** 2).unsqueeze(-1) * (W @ formula)   # diag(1 - h_s^2) W J

    with torch.enable_grad():
        h = x_tm.new_zeros(B, H)
        with torch.no_grad():
            for s in range(1, t + 1):
                (h,) = _reference_step(rnn, x_tm[s - 1], (h,))
        h_t = h.detach().requires_grad_()
        h = h_t
        for s in range(t + 1, T + 1):
            (h,) = _reference_step(rnn, x_tm[s - 1], (h,))
        autograd = _batched_jacobian(h, h_t)
    return formula, autograd.detach()


# ----------------------------------------------------------------------------- LSTM: cell path
def lstm_cell_path_product(lstm: LSTM, x: Tensor, t: int) -> tuple[Tensor, Tensor]:
    """dc_T/dc_t of a one-layer ``lstmkit.LSTM`` (initial states zero) along the direct path
    through the cell state, two ways.

    formula:  prod_{s=t+1..T} f_s, from the forget gates of ``lstm.trace(x)``; t = T gives ones.
    autograd: an independent loop over the cell's reference step (plain tensor operations) in
              which h_{s-1} enters the gates detached, so c_t reaches c_T only through
              c_s = f_s * c_{s-1} + i_s * g_s; the Jacobian of c_T w.r.t. c_t is then
              diagonal, and its diagonal is returned.

    The full dc_T/dc_t also runs through h (c_{s-1} -> h_{s-1} -> gates at s); this is the part
    the LSTM was built around, the "constant error carousel" when f = 1. Standard and coupled
    LSTMs (with or without proj_size); not peepholes, whose gates read c_{s-1} directly.

    Returns (formula, autograd), each (B, H), in the layer's dtype: float32 agrees to ~1e-7
    (different summation order in the gates), float64 to ~1e-15.
    """
    what = "lstm_cell_path_product"
    _check_single(lstm, what, (LSTM,))
    if lstm.peephole:
        raise ValueError(f"{what}: with peepholes f_s and i_s read c_{{s-1}}, so dc_T/dc_t is "
                         "not prod f_s; use a LSTM without peephole")
    x_tm = _to_time_major(lstm, x)
    T, B = x_tm.shape[:2]
    _check_t(t, T, what)
    with torch.no_grad():
        f = lstm.trace(x).steps[0][0].gates["f"]               # (T, B, H): f[s - 1] is f_s
        formula = f[t:].prod(0)

    P, H = lstm.proj_size or lstm.hidden_size, lstm.hidden_size
    with torch.enable_grad():
        h, c = x_tm.new_zeros(B, P), x_tm.new_zeros(B, H)
        with torch.no_grad():
            for s in range(1, t + 1):
                h, c = _reference_step(lstm, x_tm[s - 1], (h, c))
        c_t = c.detach().requires_grad_()
        c = c_t
        for s in range(t + 1, T + 1):
            h, c = _reference_step(lstm, x_tm[s - 1], (h.detach(), c))   # the c path only
        autograd = _batched_jacobian(c, c_t).diagonal(dim1=1, dim2=2)
    return formula, autograd.detach()


# ----------------------------------------------------------------------------- Jacobian norms
def jacobian_norms(layer, x: Tensor, norm: str = "spectral") -> np.ndarray:
    """Mean over the batch of ||dh_T/dh_{T-k}|| for k = 0..T, by autograd through the layer.

    layer: a one-layer, one-direction ``lstmkit.RNN / LSTM / GRU`` (any variant); initial states
    zero. For an LSTM the derivative is w.r.t. h_{T-k} with c_{T-k} held fixed (every path from
    h_{T-k} to h_T, through later cell states too). norm: "spectral" (largest singular value:
    the most any direction is amplified) or "frobenius".

    How: the batch is repeated once per unit j of h_T and copy j backpropagates h_T[j]; one
    traced backward then gives every row of every dh_T/dh_s (``trace.grad_h``), and the initial
    state's gradient gives s = 0. Entry k is t = T - k; entry 0 is the identity's norm
    (1 spectral, sqrt(H_out) Frobenius). Cost: one traced run over a batch of N * H_out.
    """
    what = "jacobian_norms"
    _check_single(layer, what)
    ords = {"spectral": 2, "frobenius": "fro"}
    if norm not in ords:
        raise ValueError(f"{what}: norm must be 'spectral' or 'frobenius', got {norm!r}")
    if not _h_in_state(layer):
        raise ValueError(f"{what}: in an mLSTM h_(t-1) does not enter step t, so dh_T/dh_t = 0 "
                         "for t < T; gradient_norms gives what flows back through C_t and n_t")
    x_tm = _to_time_major(layer, x)
    T, B = x_tm.shape[:2]
    P = _state_shapes(layer, B)[0][-1]                       # h's size
    x_rep = x_tm.repeat(1, P, 1)                             # (T, P*B, I): copy j = rows jB..jB+B
    with torch.enable_grad():
        states0 = [x_rep.new_zeros(shape) for shape in _state_shapes(layer, P * B)]
        states0[0].requires_grad_()
        hx = tuple(states0) if len(states0) > 1 else states0[0]
        trace = layer.trace(_to_layer_layout(layer, x_rep), hx)
        h_T = _to_time_major(layer, trace.output)[-1].view(P, B, P)
        loss = h_T.diagonal(dim1=0, dim2=2).sum()           # sum_j h_T[copy j, :, j]
        (dh0,) = torch.autograd.grad(loss, states0[0])
    grad_h = torch.cat([dh0, trace.steps[0][0].grad_h])    # (T+1, P*B, P): entry s is h_s
    J = grad_h.view(T + 1, P, B, P).transpose(1, 2)          # [s, b, j, :] = dh_T[j] / dh_s
    norms = torch.linalg.matrix_norm(J, ord=ords[norm]).mean(-1)   # (T+1,)
    return norms.flip(0).cpu().double().numpy()


def geometric_rate(curve: np.ndarray, start: int = 1) -> float:
    """Factor per step of a curve over steps back, exp of the least-squares slope of log(curve)
    from k = start on (< 1: vanishing, > 1: exploding)."""
    k = np.arange(start, len(curve))
    slope = np.polyfit(k, np.log(np.asarray(curve[start:], dtype=np.float64)), 1)[0]
    return float(np.exp(slope))


# ----------------------------------------------------------------------------- demonstrations
def exploding_demo(hidden: int = 32, length: int = 100, scale: float = 3.0,
                   max_norm: float = 1.0, seed: int = 0, batch: int = 8,
                   input_size: int = 4) -> dict:
    """A tanh RNN whose gradient explodes, and what gradient clipping does to it.

    W_hh = scale * (orthogonal), the other weights torch's default, inputs x_t ~ N(0, 1),
    float64. With scale > 1 the dynamics are chaotic: h_t does not settle, and
    ||dL/dh_{T-k}|| grows about geometrically with k for a loss at T (the sum of h_T).
    ``torch.nn.utils.clip_grad_norm_`` then rescales the parameters' gradient g to
    g * max_norm / ||g||: the norm drops to max_norm, the direction stays (cosine 1).

    Returns: steps_back (T+1,), grad_h (T+1,) mean ||dL/dh_{T-k}||, rate (per-step growth
    factor, ``geometric_rate``), total_norm (||g|| before clipping), clipped_norm (after),
    max_norm, cosine (of g before and after), scale.
    """
    with torch.random.fork_rng(devices=[]):                   # leave torch's global RNG as it was
        torch.manual_seed(seed)
        rnn = RNN(input_size, hidden, dtype=torch.float64)
        orthogonal_recurrent_(rnn, gain=scale)
        x = torch.randn(length, batch, input_size, dtype=torch.float64)
    trace, loss, dstates0, grads = _traced_gradients(rnn, x)
    result = _norms_of(rnn, trace, loss, dstates0)
    norms = steps_back_curve(result["grad_h"][0, 0], result["grad_h0"][0, 0])

    before = torch.cat([g.flatten() for g in grads])
    for p, g in zip(rnn.parameters(), grads):
        p.grad = g.clone()
    total = float(torch.nn.utils.clip_grad_norm_(rnn.parameters(), max_norm))
    after = torch.cat([p.grad.flatten() for p in rnn.parameters()])
    cosine = float(torch.nn.functional.cosine_similarity(before, after, dim=0))
    return {"steps_back": np.arange(length + 1), "grad_h": norms,
            "rate": geometric_rate(norms), "total_norm": total,
            "clipped_norm": float(after.norm()), "max_norm": max_norm, "cosine": cosine,
            "scale": scale}


def _curves(layer, x: Tensor, loss_fn=None) -> dict:
    """One cell's curves over k = 0..T steps back: grad_h (and grad_c for an LSTM; grad_C and
    grad_n instead for an mLSTM) from ``gradient_norms`` with loss_fn, jacobian from
    ``jacobian_norms`` (not for an mLSTM)."""
    g = gradient_norms(layer, x, loss_fn)
    curves = {}
    for name in ("h", "c", "C", "n"):
        if g.get(f"grad_{name}0") is not None:
            curves[f"grad_{name}"] = steps_back_curve(g[f"grad_{name}"][0, 0],
                                                      g[f"grad_{name}0"][0, 0])
    if _h_in_state(layer):
        curves["jacobian"] = jacobian_norms(layer, x)
    return curves


def gradflow_cells() -> tuple[str, ...]:
    """The registered cells gradflow compares: every one but the xLSTM stack (whose layers,
    mlstm and slstm, are compared one by one)."""
    return tuple(n for n in registry.names() if n != "xlstm")


def _check_cells(where: str, cells) -> None:
    unknown = [c for c in cells if c not in gradflow_cells()]
    if unknown:
        raise ValueError(f"{where}: unknown cells {unknown}; choose from "
                         f"{list(gradflow_cells())}")


def compare_cells(cells: Sequence[str] = ("rnn", "lstm", "gru"), length: int = 100,
                  hidden: int = 32, seed: int = 0, batch: int = 16, input_size: int = 8) -> dict:
    """Gradient flow in freshly initialised cells (torch's default initialisation), float64.

    Each cell gets the same inputs x_t ~ N(0, 1), and its weights are drawn after
    ``torch.manual_seed(seed)``. For each, over k = 0..T steps back:

        grad_h    mean ||dL/dh_{T-k}|| for L = sum of h_T (``gradient_norms``)
        grad_c    the same for dL/dc_{T-k} (LSTM only)
        grad_C, grad_n   for the mLSTM instead of grad_h: dL/dC_{T-k}, dL/dn_{T-k}
        jacobian  mean spectral norm ||dh_T/dh_{T-k}|| (``jacobian_norms``; not the mLSTM's)

    Returns {"length", "hidden", "batch", "seed", "steps_back": (T+1,), "cells": {name: {...}}};
    ``format_table`` prints it.
    """
    _check_cells("compare_cells", cells)
    x = torch.randn(length, batch, input_size, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    out = {"length": length, "hidden": hidden, "batch": batch, "seed": seed,
           "steps_back": np.arange(length + 1), "cells": {}}
    for name in cells:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layer = make_layer(name, input_size, hidden, dtype=torch.float64)
        out["cells"][name] = _curves(layer, x)
    return out


def trained_cells(cells: Sequence[str] = ("rnn", "lstm", "gru"), length: int = 100,
                  hidden: int = 32, steps: int = 1000, seed: int = 0, batch: int = 64) -> dict:
    """The same curves for cells trained on the adding problem at T = length.

    Each cell, in a ``SequenceRegressor`` (the recurrent layer, then a linear read-out of h_T),
    takes ``steps`` Adam steps (lr 1e-3, batch ``batch``, gradient norm clipped at 1) on fresh
    adding-problem batches from torch's default initialisation. Then, in float64 on one fixed
    batch, the gradient of the task's own loss (MSE of the read-out against the target sum) is
    followed back through time. Returns ``compare_cells``' dict plus "mse": {name: test MSE of
    the trained model on that batch} (predicting 1 scores 0.167).
    """
    from ..data.synthetic import adding_problem
    from ..tasks.models import SequenceRegressor

    _check_cells("trained_cells", cells)
    x_eval, y_eval = adding_problem(batch, length, torch.Generator().manual_seed(seed))
    x_eval, y_eval = x_eval.double(), y_eval.double()
    out = {"length": length, "hidden": hidden, "batch": batch, "seed": seed, "steps": steps,
           "steps_back": np.arange(length + 1), "cells": {}, "mse": {}}
    for name in cells:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SequenceRegressor(2, 1, name, hidden)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            gen = torch.Generator().manual_seed(seed + 1)
            torch.set_flush_denormal(True)          # shrinking gradients: denormals are slow
            try:
                for _ in range(steps):
                    x, y = adding_problem(batch, length, gen)
                    loss = torch.nn.functional.mse_loss(model(x)[:, 0], y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
            finally:
                torch.set_flush_denormal(False)     # back to torch's default
        model = model.double().eval()
        with torch.no_grad():
            out["mse"][name] = float(torch.nn.functional.mse_loss(model(x_eval)[:, 0], y_eval))

        def task_loss(output, model=model):
            return torch.nn.functional.mse_loss(model.out(output[-1])[:, 0], y_eval)

        out["cells"][name] = _curves(model.rnn, x_eval, task_loss)
    return out


_QUANTITIES = {"grad_h": "mean norm dL/dh_{T-k}", "grad_c": "mean norm dL/dc_{T-k}",
               "grad_C": "mean norm dL/dC_{T-k}", "grad_n": "mean norm dL/dn_{T-k}",
               "jacobian": "mean spectral norm dh_T/dh_{T-k}"}


def format_table(result: dict, steps_back: Sequence[int] = TABLE_STEPS_BACK) -> str:
    """A markdown table of ``compare_cells``' curves at the given steps back (those <= T)."""
    ks = [k for k in steps_back if k <= result["length"]]
    lines = ["| cell | quantity | " + " | ".join(f"k={k}" for k in ks) + " |",
             "|---|---|" + "---:|" * len(ks)]
    for name, curves in result["cells"].items():
        for key, curve in curves.items():
            values = " | ".join(f"{curve[k]:.3g}" for k in ks)
            lines.append(f"| {name} | {_QUANTITIES[key]} | {values} |")
    return "\n".join(lines)


__all__ = ["gradient_norms", "rnn_jacobian_product", "lstm_cell_path_product", "jacobian_norms",
           "exploding_demo", "compare_cells", "trained_cells", "format_table", "steps_back_curve",
           "geometric_rate"]
