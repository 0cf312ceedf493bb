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

An LSTM with ``proj_size`` has no ONNX operator: its layers run as ONNX ``Scan`` over the cell's
reference step (``Cell.reference_step``), for any length, with the same handling of lengths.

Shapes: T steps, B batch, D directions, H hidden size, H_out = proj_size or H.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..cells.base import Weights
from ..cells.gru import GRUCellMath
from ..cells.lstm import LSTMCellMath
from ..cells.rnn import RNNCellMath

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
    """Layer k's parameters per direction in torch's layout, for the Scan form."""
    return {f"d{d}_{key}": t if live else t.detach().clone()
            for d in range(layer.num_directions)
            for key, t in vars(layer.weights(k, d)).items() if t is not None}


class OnnxLayer(nn.Module):
    """Stands in for an lstmkit LSTM, GRU or RNN while torch.onnx.export traces a model: same
    call ``(input, hx=None, lengths=None)`` and results, written as ONNX operators.

    ``stream_in`` / ``stream_out`` carry the state past the model's own code for a streaming
    export: when set, ``stream_in`` is the initial state of a call without hx, and the final
    state lands in ``stream_out``.
    """

    def __init__(self, layer, live: bool = False):
        super().__init__()
        if layer.family not in ("lstm", "gru", "rnn") or \
                not isinstance(layer.cell, (LSTMCellMath, GRUCellMath, RNNCellMath)):
            # ONNX's operators have the LSTM, GRU and RNN equations only (no LayerNorm, no
            # registered cell of one's own)
            raise ExportError(f"{type(layer).__name__} with {type(layer.cell).__name__} has no "
                              "ONNX form")
        self.family, self.kind = layer.family, _kind(layer)
        self.num_layers, self.D = layer.num_layers, layer.num_directions
        self.hidden_size, self.proj_size = layer.hidden_size, layer.proj_size
        self.input_size, self.batch_first = layer.input_size, layer.batch_first
        self.nonlinearity = getattr(layer.cell, "nonlinearity", "tanh")
        self.reset_after = getattr(layer, "reset_after", True)
        self.cell = layer.cell
        self.stream_in: tuple | None = None
        self.stream_out: tuple | None = None
        # live: the layer's own parameters, converted in the traced graph (torch.onnx.export
        # of a model); else converted once into buffers (export_onnx)
        self._live = (layer,) if live else None       # a tuple: not a submodule
        self._names = []
        convert = _scan_weights if self.proj_size else onnx_weights
        for k in range(self.num_layers if not live else 0):
            tensors = convert(layer, k)
            for name, t in tensors.items():
                self.register_buffer(f"l{k}_{name}", t)
            self._names.append(list(tensors))

    def _layer(self, k: int) -> dict[str, Tensor]:
        if self._live is not None:
            return (_scan_weights if self.proj_size else onnx_weights)(self._live[0], k, live=True)
        return {name: getattr(self, f"l{k}_{name}") for name in self._names[k]}

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
        n_states = 2 if self.family == "lstm" else 1
        if hx is not None:
            hx = tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)
            if unbatched:
                hx = tuple(s.unsqueeze(1) for s in hx)
        seq_lens = None if lengths is None else torch.as_tensor(lengths).to(torch.int32)
        finals = [[] for _ in range(n_states)]
        for k in range(self.num_layers):
            states = None if hx is None else \
                tuple(s[k * self.D : (k + 1) * self.D] for s in hx)
            run = self._scan if self.proj_size else self._native
            x, layer_finals = run(k, x, seq_lens, states)
            for f, s in zip(finals, layer_finals):
                f.append(s)
        finals = [torch.cat(f) for f in finals]                           # (L*D, B, size)
        self.stream_out = tuple(finals)
        if unbatched:
            x, finals = x.squeeze(1), [f.squeeze(1) for f in finals]
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, (tuple(finals) if self.family == "lstm" else finals[0])

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
        """Layer k as a Scan over the reference step, for configurations ONNX has no operator
        for (proj_size). Past a sequence's length its state stays and its output is zero."""
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
            init = tuple(states[j][d] if states is not None else x.new_zeros(B, size)
                         for j, size in enumerate(sizes))

            def step(prev, inp, w=w):
                xw_t, m_t = inp
                new = self.cell.reference_step(w, xw_t, prev)
                kept = tuple(m_t * n + (1 - m_t) * p for n, p in zip(new, prev))
                return kept, m_t * new[0]

            last, ys = scan(step, init, (xw, mask))
            if d:
                ys = ys.gather(0, index[:, :, None].expand_as(ys))
            outputs.append(ys)
            for f, s in zip(finals, last):
                f.append(s)
        y = torch.cat(outputs, -1) if self.D == 2 else outputs[0]
        return y, [torch.stack(f) for f in finals]
