"""The ONNX form of lstmkit's layers: ONNX's own ``LSTM``, ``GRU`` and ``RNN`` operators, what a
layer becomes under ``torch.onnx.export`` and ``lstmkit.export_onnx``.

This module owns every conversion of weight layout between lstmkit (torch's layout) and ONNX.

    lstmkit / torch                          ONNX (one tensor per layer, directions stacked)
    LSTM  W_ih rows (i|f|g|o)                W [D, 4H, I] rows (i|o|f|c)
          peepholes w_ch (p_i|p_f|p_o)       P [D, 3H] (p_i|p_o|p_f)
          b_ih, b_hh                         B [D, 8H] = (Wb|Rb), each (i|o|f|c)
    coupled: i_t = 1 - f_t, rows (f|g|o)     input_forget=1. onnxruntime then computes its
                                             f_t = 1 - i_t from the i rows; lstmkit's f rows go
                                             there negated (sigma(-a) = 1 - sigma(a)), so ONNX's
                                             i_t = 1 - f_t and ONNX's f_t = f_t; ONNX's f rows
                                             and p_f are unused (zero)
    GRU   (r|z|n), reset_after=True/False    (z|r|h), linear_before_reset=1/0
    RNN   tanh / relu                        activations ["Tanh"] / ["Relu"]

Any other cell has no ONNX operator: an LSTM with ``proj_size``, the LayerNorm cells (lstm-ln,
gru-ln, ``layer_norm=True``), sLSTM, a registered cell of one's own. Its layers run as an ONNX
``Scan`` over the cell's reference step (``Cell.reference_step``), for any length, with the same
handling of lengths; a cell without a reference step raises ExportError.

mLSTM (``lstmkit.mLSTM``, no recurrent weight) runs in its parallel form (``OnnxMLSTM``): plain
matrix products over the T steps of a call, from the initial state (C, n, m). minGRU and minLSTM
(``OnnxMinRNN``): their gates for all steps at once, then a Scan of h_t = a_t h_{t-1} + b_t. An
xLSTM stack (``OnnxXLSTM``): the stack with each of its layers in its form. ``onnx_form`` maps a
layer to its form.

Shapes: T steps, B batch, D directions, H hidden size, H_out = proj_size or H.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..cells import minrnn as minrnn_cell
from ..cells import mlstm as mlstm_cell
from ..cells.base import Cell, Weights
from ..cells.gru import GRUCellMath
from ..cells.lstm import LSTMCellMath
from ..cells.rnn import RNNCellMath
from ..engine.reference import zoned
from .minrnn import _MinRNN
from .mlstm import _PROJECTIONS, mLSTM
from .recurrent import _Recurrent
from .stack import Stacking
from .xlstm import xLSTM

# gate blocks: ONNX's order, given as lstmkit's block index (None: a zero block)
_ORDER = {"lstm": (0, 3, 1, 2), "lstm-coupled": ("-0", 2, None, 1), "gru": (1, 0, 2),
          "rnn": (0,)}
_PEEPHOLE_ORDER = {"lstm": (0, 2, 1), "lstm-coupled": ("-0", 1, None)}


class ExportError(ValueError):
    """A model or configuration that has no ONNX form here; the message names it."""


def _reorder(t: Tensor, order, H: int) -> Tensor:
    """Blocks of H rows (dim 0) of t in another order; "-k" is block k negated, None zeros."""
    blocks = t.split(H)
    out = []
    for k in order:
        if k is None:
            out.append(torch.zeros_like(blocks[0]))
        elif isinstance(k, str):
            out.append(-blocks[int(k[1:])])
        else:
            out.append(blocks[k])
    return torch.cat(out)


_NATIVE = (LSTMCellMath, GRUCellMath, RNNCellMath)


def has_reference_step(cell: Cell) -> bool:
    """Whether the cell writes its step in plain torch ops (what the Scan form runs)."""
    return type(cell).reference_step is not Cell.reference_step


def _kind(layer) -> str:
    if layer.family == "lstm":
        return "lstm-coupled" if layer.coupled else "lstm"
    return layer.family


def onnx_weights(layer, k: int, live: bool = False) -> dict[str, Tensor]:
    """Layer k's W, R and (where present) B and P in ONNX's layout, directions stacked: copies,
    or with ``live`` computed from the parameters (as a traced graph records them)."""
    order, H = _ORDER[_kind(layer)], layer.hidden_size
    per_dir = [layer.weights(k, d) for d in range(layer.num_directions)]
    out = {"W": torch.stack([_reorder(w.w_ih, order, H) for w in per_dir]),
           "R": torch.stack([_reorder(w.w_hh, order, H) for w in per_dir])}
    if per_dir[0].b_ih is not None:
        out["B"] = torch.stack([torch.cat([_reorder(w.b_ih, order, H),
                                           _reorder(w.b_hh, order, H)]) for w in per_dir])
    if per_dir[0].w_ch is not None:
        p_order = _PEEPHOLE_ORDER[_kind(layer)]
        out["P"] = torch.stack([_reorder(w.w_ch, p_order, H) for w in per_dir])
    if live:
        return out
    return {name: t.detach().clone().contiguous() for name, t in out.items()}


def _scan_weights(layer, k: int, live: bool = False) -> dict[str, Tensor]:
    """Layer k's parameters per direction in torch's layout, for the Scan form. Live ones are
    detached (the graph is the same): torch.onnx fails to decompose a Scan over weights that
    require grad (sLSTM's heads)."""
    return {f"d{d}_{key}": t.detach() if live else t.detach().clone()
            for d in range(layer.num_directions)
            for key, t in vars(layer.weights(k, d)).items() if t is not None}


class OnnxLayer(nn.Module):
    """Stands in for an lstmkit LSTM, GRU, RNN, sLSTM or ``Recurrent`` while torch.onnx.export
    traces a model: same call ``(input, hx=None, lengths=None)`` and results, written as ONNX
    operators (the native ones for the cells ONNX has, else a Scan over the reference step).

    ``stream_in`` / ``stream_out`` carry the state past the model's own code for a streaming
    export: when set, ``stream_in`` is the initial state of a call without hx, and the final
    state lands in ``stream_out``.
    """

    def __init__(self, layer, live: bool = False):
        super().__init__()
        # ONNX's operators have the LSTM, GRU and RNN equations only; the other cells run
        # their reference step in a Scan
        # zoneout in evaluation, s_t = z s_{t-1} + (1 - z) s~_t per state: a Scan step too
        self.zone = tuple(z or None for z in layer._zone)       # per state: z, or None
        self.native = (type(layer.cell) in _NATIVE and not layer.proj_size
                       and not any(self.zone))
        if not self.native and not has_reference_step(layer.cell):
            raise ExportError(f"{type(layer).__name__} with {type(layer.cell).__name__} has no "
                              "ONNX form: the cell has no reference_step (plain torch ops) for "
                              "an ONNX Scan to run")
        self.family, self.kind = layer.family, _kind(layer)
        self.num_layers, self.D = layer.num_layers, layer.num_directions
        self.hidden_size, self.proj_size = layer.hidden_size, layer.proj_size
        self.input_size, self.batch_first = layer.input_size, layer.batch_first
        self.nonlinearity = getattr(layer.cell, "nonlinearity", "tanh")
        self.reset_after = getattr(layer, "reset_after", True)
        self.cell = layer.cell
        self.state_names = layer.cell.state_names
        self.stream_in: tuple | None = None
        self.stream_out: tuple | None = None
        # live: the layer's own parameters, converted in the traced graph (torch.onnx.export
        # of a model); else converted once into buffers (export_onnx)
        self._live = (layer,) if live else None       # a tuple: not a submodule
        self._names = []
        convert = onnx_weights if self.native else _scan_weights
        for k in range(self.num_layers if not live else 0):
            tensors = convert(layer, k)
            for name, t in tensors.items():
                self.register_buffer(f"l{k}_{name}", t)
            self._names.append(list(tensors))

    def _layer(self, k: int) -> dict[str, Tensor]:
        if self._live is not None:
            return (onnx_weights if self.native else _scan_weights)(self._live[0], k, live=True)
        return {name: getattr(self, f"l{k}_{name}") for name in self._names[k]}

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Shapes of the states (``state_names``' order) for a batch: (L * D, batch, size)."""
        return [(self.num_layers * self.D, batch, size) for size in self.cell.state_sizes]

    def start_values(self) -> tuple[float, ...]:
        """Each state's value at the start of a stream: zeros (sLSTM's n = 0 starts every
        unit afresh, m_1 = i~_1)."""
        return (0.0,) * len(self.state_names)

    def forward(self, input, hx=None, lengths=None):
        if isinstance(input, PackedSequence):
            raise ExportError("a PackedSequence cannot be exported (its batch sizes are data); "
                              "pass the padded batch and lengths=... to the layer instead")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else input
        if self.batch_first and not unbatched:
            x = x.transpose(0, 1)                                         # (T, B, I)
        if hx is None and self.stream_in is not None:
            hx = self.stream_in
        n_states = len(self.state_names)
        if hx is not None:
            hx = tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)
            if unbatched:
                hx = tuple(s.unsqueeze(1) for s in hx)
        seq_lens = None if lengths is None else torch.as_tensor(lengths).to(torch.int32)
        finals = [[] for _ in range(n_states)]
        for k in range(self.num_layers):
            states = None if hx is None else \
                tuple(s[k * self.D : (k + 1) * self.D] for s in hx)
            run = self._native if self.native else self._scan
            x, layer_finals = run(k, x, seq_lens, states)
            for f, s in zip(finals, layer_finals):
                f.append(s)
        finals = [torch.cat(f) for f in finals]                           # (L*D, B, size)
        self.stream_out = tuple(finals)
        if unbatched:
            x, finals = x.squeeze(1), [f.squeeze(1) for f in finals]
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, (tuple(finals) if n_states > 1 else finals[0])

    def _native(self, k: int, x: Tensor, seq_lens, states):
        """One ONNX LSTM/GRU/RNN node for layer k: (T, B, D*H) and the final states."""
        w, H, D = self._layer(k), self.hidden_size, self.D
        T, B = x.shape[0], x.shape[1]
        attrs = {"hidden_size": H,
                 "direction": "bidirectional" if D == 2 else "forward"}
        inputs = [x, w["W"], w["R"], w.get("B"), seq_lens]
        inputs += list(states) if states is not None else [None] * (2 if self.family == "lstm"
                                                                    else 1)
        if self.family == "lstm":
            op, n_out = "LSTM", 3
            if self.kind == "lstm-coupled":
                attrs["input_forget"] = 1
            inputs.append(w.get("P"))
        elif self.family == "gru":
            op, n_out = "GRU", 2
            attrs["linear_before_reset"] = int(self.reset_after)
        else:
            op, n_out = "RNN", 2
            attrs["activations"] = [self.nonlinearity.capitalize()] * D
        while inputs[-1] is None:                                     # trailing optional ones
            inputs.pop()
        shapes = [[T, D, B, H]] + [[D, B, H]] * (n_out - 1)
        y, *finals = torch.onnx.ops.symbolic_multi_out(
            op, inputs, attrs, dtypes=[x.dtype] * n_out, shapes=shapes)
        y = y.permute(0, 2, 1, 3).reshape(T, B, D * H)                # (T, B, D*H)
        return y, finals

    def _scan(self, k: int, x: Tensor, seq_lens, states):
        """Layer k as a Scan over the reference step, for the cells ONNX has no operator for
        (proj_size, LayerNorm, sLSTM, registered cells). Past a sequence's length its state
        stays and its output is zero."""
        from torch._higher_order_ops.scan import scan

        w_all, T, B = self._layer(k), x.shape[0], x.shape[1]
        sizes = self.cell.state_sizes
        steps = torch.arange(T, device=x.device)[:, None].expand(T, B)            # (T, B)
        lens = (seq_lens.to(torch.int64)[None, :] if seq_lens is not None
                else torch.full((1, B), T, dtype=torch.int64, device=x.device))
        mask = (steps < lens).to(x.dtype)[:, :, None]                              # (T, B, 1)
        outputs, finals = [], [[] for _ in sizes]
        for d in range(self.D):
            w = Weights(**{key[3:]: t for key, t in w_all.items() if key.startswith(f"d{d}_")})
            # the reverse direction reads each sequence backwards from its own last step
            index = torch.where(steps < lens, lens - 1 - steps, steps) if d else None
            xd = x.gather(0, index[:, :, None].expand_as(x)) if d else x
            xw = xd.matmul(w.w_ih.t())
            bias = self.cell.hoisted_bias(w)
            if bias is not None:
                xw = xw + bias
            # a given state copied: torch.export cannot trace a Scan (past the first layer)
            # whose initial state is a view of a graph input
            init = tuple(states[j][d].clone() if states is not None else x.new_zeros(B, size)
                         for j, size in enumerate(sizes))

            # the steps see the cell, not the module (torch.compile, which traces them, lifts
            # tensors it finds on a module into the graph)
            def step(prev, inp, w=w, cell=self.cell, zone=self.zone):
                xw_t, m_t = inp
                new = zoned(cell.reference_step(w, xw_t, prev), prev, zone)
                kept = tuple(m_t * n + (1 - m_t) * p for n, p in zip(new, prev))
                return kept, m_t * new[0]

            def full_step(prev, xw_t, w=w, cell=self.cell, zone=self.zone):  # all T long
                new = zoned(cell.reference_step(w, xw_t, prev), prev, zone)
                return new, new[0].clone()            # an output may not alias the carry

            # detached (an identity in ONNX): torch.onnx fails on a Scan whose inputs require
            # grad (an embedding's output), as on one over such weights
            init, xw = tuple(s.detach() for s in init), xw.detach()
            if seq_lens is None:
                last, ys = scan(full_step, init, xw)
            else:
                last, ys = scan(step, init, (xw, mask))
            if d:
                ys = ys.gather(0, index[:, :, None].expand_as(ys))
            outputs.append(ys)
            for f, s in zip(finals, last):
                f.append(s)
        y = torch.cat(outputs, -1) if self.D == 2 else outputs[0]
        return y, [torch.stack(f) for f in finals]


# ---------------------------------------------------------------------------------------- mLSTM


def _mlstm_parallel(q, k, v, i_pre, log_f, state):
    """mLSTM's parallel form in plain ops (``lstmkit.cells.mlstm._Parallel``'s forward, with the
    same stabiliser), for any T >= 1: q, k, v (B, NH, T, d), i~ and log f (B, NH, T), state
    (C~_0, n~_0, m_0) or None; returns h~ (B, NH, T, d) and the final (C~, n~, m)."""
    T = q.shape[-2]
    F_ = log_f.cumsum(-1)                                                          # (B, NH, T)
    steps = torch.arange(T, device=q.device)
    causal = steps[:, None] >= steps[None, :]                                        # (T, T)
    log_D = F_[..., :, None] - F_[..., None, :] + i_pre[..., None, :]            # (B, NH, T, T)
    log_D = torch.where(causal, log_D, torch.full_like(log_D, -math.inf))
    m = log_D.amax(-1)                                                            # (B, NH, T)
    if state is not None:
        C0, n0, m0 = state
        b = F_ + m0[..., None]
        m = torch.maximum(m, b)
        g = torch.exp(b - m)                                                      # (B, NH, T)
    D = torch.exp(log_D - m[..., None])
    S = (q @ k.transpose(-1, -2)) * D
    num = S @ v                                                                # (B, NH, T, d)
    s = S.sum(-1)
    w = D[..., -1, :]                               # the last row: the final state's weights
    C = (v * w[..., None]).transpose(-1, -2) @ k                               # (B, NH, d, d)
    n = (k * w[..., None]).sum(-2)
    if state is not None:
        num = num + g[..., None] * (q @ C0.transpose(-1, -2))
        s = s + g * (q @ n0[..., None]).squeeze(-1)
        C = C + g[..., -1, None, None] * C0
        n = n + g[..., -1, None] * n0
    den = torch.maximum(s.abs(), mlstm_cell._lower(m))
    return num / den[..., None], (C, n, m[..., -1])


def _mlstm_scan(q, k, v, i_pre, log_f, state):
    """The same as an ONNX Scan over ``lstmkit.cells.mlstm.step``; a missing state is
    (0, 0, -inf), which the step turns into C~_1 = v_1 k_1^T, n~_1 = k_1, m_1 = i~_1."""
    from torch._higher_order_ops.scan import scan

    B, NH, T, d = q.shape
    if state is None:
        state = (q.new_zeros(B, NH, d, d), q.new_zeros(B, NH, d),
                 q.new_full((B, NH), -math.inf))
    # time first; detached as in OnnxLayer._scan
    xs = tuple(t.movedim(2, 0).detach() for t in (q, k, v, i_pre, log_f))
    state = tuple(s.detach() for s in state)

    def step(prev, inp):                            # the exp gate's f~ is log f
        h, new = mlstm_cell.step(*inp, prev, forget_gate="exp")
        return new, h

    final, h = scan(step, state, xs)
    return h.movedim(0, 2), final


class OnnxMLSTM(nn.Module):
    """Stands in for an ``lstmkit.mLSTM`` while torch.onnx.export traces a model: same call
    ``(input, state=None, lengths=None)`` and results (output, (C, n, m)), in plain ONNX
    operators; ``lengths`` for a right-padded batch as each sequence alone (``forward``).

    ``form``: "parallel" (default: every step of a call at once, the masked decay matrix of
    the paper's parallel form, O(T^2) memory per head; feed a long sequence in chunks with the
    streaming export) or "scan" (an ONNX Scan over the recurrent step, O(T) memory). Measured in
    onnxruntime, one thread, B = 1, H = 64, 4 heads: parallel 0.037 / 0.048 / 0.24 / 5.1 ms at
    T = 1 / 16 / 128 / 512, scan 0.026 / 0.19 / 1.4 / 11.5 ms. ``stream_in`` / ``stream_out``
    as ``OnnxLayer``'s.
    """

    state_names = ("C", "n", "m")
    FORMS = ("parallel", "scan")

    def __init__(self, layer, live: bool = False, form: str = "parallel"):
        super().__init__()
        if form not in self.FORMS:
            raise ValueError(f"OnnxMLSTM: form should be one of {self.FORMS}, got {form!r}")
        self.form, self.family = form, "mlstm"
        self.num_layers, self.D = layer.num_layers, layer.num_directions
        self.hidden_size, self.num_heads = layer.hidden_size, layer.num_heads
        self.head_size, self.forget_gate = layer.head_size, layer.forget_gate
        self.input_size, self.batch_first = layer.input_size, layer.batch_first
        self.stream_in: tuple | None = None
        self.stream_out: tuple | None = None
        self._live = (layer,) if live else None       # a tuple: not a submodule
        for index in range(0 if live else self.num_layers * self.D):
            weight, bias = layer._stack([getattr(layer, name) for name in _mlstm_names(layer,
                                                                                      index)])
            self.register_buffer(f"w{index}", weight.detach().clone())
            if bias is not None:
                self.register_buffer(f"b{index}", bias.detach().clone())
            if layer.head_norm:
                self.register_buffer(f"g{index}", getattr(
                    layer, layer._param_names[index]["weight_norm"]).detach().clone())
        self.head_norm = layer.head_norm

    def _norm_weight(self, index: int) -> Tensor:
        """The head norm's weight (H,) of one layer-direction."""
        if self._live is not None:
            layer = self._live[0]
            return getattr(layer, layer._param_names[index]["weight_norm"])
        return getattr(self, f"g{index}")

    def _weights(self, index: int) -> tuple[Tensor, Tensor | None]:
        """(W_q|W_k|W_v|w_i|w_f|W_o) (3H + 2NH + H, H_k) and the biases alike."""
        if self._live is not None:
            layer = self._live[0]
            return layer._stack([getattr(layer, name) for name in _mlstm_names(layer, index)])
        return getattr(self, f"w{index}"), getattr(self, f"b{index}", None)

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Shapes of (C, n, m) for a batch: (L * D, batch, NH, d, d), (.., NH, d), (.., NH)."""
        LD, NH, d = self.num_layers * self.D, self.num_heads, self.head_size
        return [(LD, batch, NH, d, d), (LD, batch, NH, d), (LD, batch, NH)]

    def start_values(self) -> tuple[float, ...]:
        """(C, n, m) at the start of a stream: (0, 0, -inf), the state the layer starts from
        without one (m_1 = i~_1). Zeros give the same outputs (h~ does not depend on m), with
        final states scaled by another exp(m)."""
        return (0.0, 0.0, -math.inf)

    def forward(self, input, state=None, lengths=None):
        """``lengths`` (N,), any order, for a right-padded batch: a padded step is an identity
        step (i~ = -inf, log f = 0), its output zero; the reverse direction reads each sequence
        backwards from its own last step."""
        if lengths is not None and input.dim() != 3:
            raise ExportError(f"mLSTM: lengths needs a batched 3-D input, got {input.dim()}-D")
        if state is None and self.stream_in is not None:
            state = self.stream_in
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else input.transpose(0, 1) if self.batch_first \
            else input                                                           # (L, N, H_in)
        if state is not None:
            state = tuple(s.unsqueeze(1) for s in state) if unbatched else tuple(state)
        valid = None
        if lengths is not None:
            steps = torch.arange(x.shape[0], device=x.device)[:, None]
            lengths = torch.as_tensor(lengths).to(torch.int64)
            valid = steps < lengths                                                   # (L, N)
            order = torch.where(valid, lengths - 1 - steps, steps)[..., None]      # (L, N, 1)

        def reverse(t):
            return t.gather(0, order.expand(-1, -1, t.shape[-1])) if valid is not None \
                else t.flip(0)

        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.D):
                index = layer * self.D + direction
                seq = reverse(x) if direction else x
                h, final = self._layer(seq, index, None if state is None else
                                       tuple(s[index] for s in state), valid)
                outputs.append(reverse(h) if direction else h)
                finals.append(final)
            x = torch.cat(outputs, -1) if self.D == 2 else outputs[0]             # (L, N, D*H)
            if valid is not None:
                x = x * valid[..., None].to(x.dtype)                  # zero past each length
        C, n, m = (torch.stack(parts) for parts in zip(*finals))
        self.stream_out = (C, n, m)
        if unbatched:
            return x.squeeze(1), (C.squeeze(1), n.squeeze(1), m.squeeze(1))
        return (x.transpose(0, 1) if self.batch_first else x), (C, n, m)

    def _layer(self, x: Tensor, index: int, state, valid) -> tuple[Tensor, tuple]:
        """``lstmkit.mLSTM._layer`` in the chosen form: (h (L, N, H), final (C, n, m)); valid
        (L, N) or None: False at padded steps, made identity steps."""
        L, N = x.shape[0], x.shape[1]
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        projected = F.linear(x, *self._weights(index))                   # (L, N, 4 H + 2 NH)
        q, k, v, i_pre, f_pre, o = projected.split([H, H, H, NH, NH, H], -1)
        q, k, v = (z.reshape(L, N, NH, d).permute(1, 2, 0, 3) for z in (q, k, v))  # (N,NH,L,d)
        k = k * (1.0 / math.sqrt(d))
        i_pre, f_pre = i_pre.permute(1, 2, 0), f_pre.permute(1, 2, 0)            # (N, NH, L)
        log_f = mlstm_cell.log_forget(f_pre, self.forget_gate)
        if valid is not None:                         # identity steps: i_t = 0, f_t = 1
            inside = valid.t()[:, None, :]                                         # (N, 1, L)
            i_pre = torch.where(inside, i_pre, torch.full_like(i_pre, -math.inf))
            log_f = torch.where(inside, log_f, torch.zeros_like(log_f))
        run = _mlstm_parallel if self.form == "parallel" else _mlstm_scan
        h, final = run(q, k, v, i_pre, log_f, state)
        h = h.permute(2, 0, 1, 3)                                               # (L, N, NH, d)
        if self.head_norm:                             # GN(h~), as mLSTM._group_norm
            h = F.layer_norm(h, (d,), eps=1e-5) * self._norm_weight(index).view(NH, d)
        return torch.sigmoid(o) * h.reshape(L, N, H), final


def _mlstm_names(layer, index: int) -> list[str]:
    """Parameter names of one layer-direction in ``mLSTM._stack``'s order."""
    names = layer._param_names[index]
    return [names[f"{kind}_{p}"] for kind in ("weight", "bias")
            for p in _PROJECTIONS if f"{kind}_{p}" in names]


# ------------------------------------------------------------------------------ minGRU, minLSTM


class OnnxMinRNN(nn.Module):
    """Stands in for an ``lstmkit.minGRU`` / ``minLSTM`` while torch.onnx.export traces a model:
    same call ``(input, state=None, lengths=None)`` and results. Per layer and direction the
    coefficients of h_t = a_t * h_{t-1} + b_t come for all steps at once
    (``lstmkit.cells.minrnn.coefficients``: elementwise ops on W_ih x_t + b_ih), the recurrence
    runs as an ONNX Scan of one multiply-add per step (the layers' sequential mode; lengths as
    the layer takes them: each sequence reversed within its length for the reverse direction,
    zero outputs past it, the final state at its last step)."""

    state_names = ("h",)

    def __init__(self, layer, live: bool = False):
        super().__init__()
        self.kind, self.family = layer.kind, layer.kind
        self.num_layers, self.D = layer.num_layers, layer.num_directions
        self.hidden_size, self.batch_first = layer.hidden_size, layer.batch_first
        self.stream_in: tuple | None = None
        self.stream_out: tuple | None = None
        self._live = (layer,) if live else None       # a tuple: not a submodule
        self._bias = layer.bias
        for k in range(0 if live else self.num_layers):
            for d in range(self.D):
                weight, bias = layer._weights(k, d)
                self.register_buffer(f"w{k}_{d}", weight.detach().clone())
                if bias is not None:
                    self.register_buffer(f"b{k}_{d}", bias.detach().clone())

    def _weights(self, k: int, d: int) -> tuple[Tensor, Tensor | None]:
        if self._live is not None:
            return self._live[0]._weights(k, d)
        return getattr(self, f"w{k}_{d}"), getattr(self, f"b{k}_{d}", None)

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        return [(self.num_layers * self.D, batch, self.hidden_size)]

    def start_values(self) -> tuple[float, ...]:
        return (0.0,)                                  # h_0 = 0, the layer's default

    def forward(self, input, state=None, lengths=None):
        from torch._higher_order_ops.scan import scan

        if isinstance(input, PackedSequence):
            raise ExportError("a PackedSequence cannot be exported (its batch sizes are data); "
                              "pass the padded batch and lengths=... to the layer instead")
        if state is None and self.stream_in is not None:
            state = self.stream_in[0]
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else input.transpose(0, 1) if self.batch_first \
            else input                                                           # (L, N, H_in)
        if state is not None and unbatched:
            state = state.unsqueeze(1)
        T, B, H = x.shape[0], x.shape[1], self.hidden_size
        steps = torch.arange(T, device=x.device)[:, None]                         # (L, 1)
        if lengths is not None:
            lengths = torch.as_tensor(lengths).to(torch.int64)
            order = torch.where(steps < lengths, lengths - 1 - steps, steps)[..., None]
            inside = (steps < lengths)[..., None].to(x.dtype)                     # (L, N, 1)
            at_end = (lengths - 1)[None, :, None].expand(1, B, H)

        def reverse(t):
            return t.gather(0, order.expand(-1, -1, t.shape[-1])) if lengths is not None \
                else t.flip(0)

        def step(h_prev, inp):
            a_t, b_t = inp
            h = a_t * h_prev + b_t                         # h_t = a_t h_{t-1} + b_t
            return h, h.clone()                            # an output may not alias the carry

        finals = []
        for k in range(self.num_layers):
            outputs = []
            for d in range(self.D):
                x_d = reverse(x) if d else x
                pre = F.linear(x_d, *self._weights(k, d))                       # (L, N, G*H)
                a, b = minrnn_cell.coefficients(self.kind, pre)                  # (L, N, H)
                h0 = state[k * self.D + d].clone() if state is not None else \
                    x.new_zeros(B, H)
                # detached, as in OnnxLayer._scan
                last, h = scan(step, h0.detach(), (a.detach(), b.detach()))
                finals.append(h.gather(0, at_end)[0] if lengths is not None else last)
                outputs.append(reverse(h) if d else h)
            x = torch.cat(outputs, -1) if self.D == 2 else outputs[0]             # (L, N, D*H)
            if lengths is not None:
                x = x * inside                                        # zero past each length
        h_n = torch.stack(finals)                                              # (L*D, N, H)
        self.stream_out = (h_n,)
        if unbatched:
            return x.squeeze(1), h_n.squeeze(1)
        return (x.transpose(0, 1) if self.batch_first else x), h_n


# ---------------------------------------------------------------------------------- xLSTM stack


class OnnxXLSTM(nn.Module):
    """Stands in for an ``lstmkit.layers.xLSTM`` stack: the stack itself (a copy) with each of
    its mLSTM and sLSTM layers in its ONNX form; its state (C, n, m, h, c, n_s, m_s) streams as
    one, as the stack takes and returns it."""

    state_names = ("C", "n", "m", "h", "c", "n_s", "m_s")

    def __init__(self, layer, live: bool = False):
        super().__init__()
        self.family, self.D = "xlstm", layer.num_directions
        self.stack = copy.deepcopy(layer)
        for k, inner in enumerate(self.stack.layers):
            self.stack.layers[k] = onnx_form(inner, live)
        self.stream_in: tuple | None = None
        self.stream_out: tuple | None = None

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        return self.stack.state_shapes(batch)

    def start_values(self) -> tuple[float, ...]:
        return (0.0, 0.0, -math.inf, 0.0, 0.0, 0.0, 0.0)    # the mLSTM's and sLSTM's

    def forward(self, input, state=None, lengths=None):
        if state is None and self.stream_in is not None:
            state = self.stream_in
        out, state = self.stack(input, state, lengths)
        self.stream_out = tuple(state)
        return out, state


def onnx_form(module: nn.Module, live: bool = False) -> nn.Module | None:
    """The ONNX form of an lstmkit layer (``OnnxLayer``, ``OnnxMLSTM``, ``OnnxMinRNN``,
    ``OnnxXLSTM``), or None for any other module."""
    for kind, form in _FORMS:
        if isinstance(module, kind):
            return form(module, live)
    return None


_FORMS = ((_Recurrent, OnnxLayer), (mLSTM, OnnxMLSTM), (_MinRNN, OnnxMinRNN),
          (xLSTM, OnnxXLSTM))
LAYER_TYPES = tuple(kind for kind, _ in _FORMS)
Stacking.onnx_form = OnnxLayer          # what torch.onnx.export traces in a layer's place
