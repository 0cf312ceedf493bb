"""Layers and directions stacked over the engines: torch's fused kernels for a whole stack, or
the hand-written engine one layer and direction at a time (the reverse direction reads the
flipped sequence), packed batches padded for it and packed again."""

from __future__ import annotations

import torch
from torch import _VF, Tensor
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..dropout import dropout
from ..engine.ops import sequence
from ..engine.sequence import StepRecord
from ..trace import Trace


class Stacking:
    """Mixed into ``_Recurrent``: run all layers and directions of one call."""

    # what torch.onnx.export traces in place of the layer (ONNX's own operators): layers/onnx.py,
    # which sits above the layers, registers its OnnxLayer here when it is imported
    onnx_form = None

    def _run_torch(self, x: Tensor, batch_sizes, states0):
        fn = {"lstm": _VF.lstm, "gru": _VF.gru, "rnn": _VF.rnn_tanh}[self.family]
        if self.family == "rnn" and self.cell.nonlinearity == "relu":
            fn = _VF.rnn_relu
        hx = tuple(states0) if self.family == "lstm" else states0[0]
        args = (hx, self._flat_weights, self.bias, self.num_layers, self.dropout,
                self.training, bool(self.bidirectional))
        if batch_sizes is None:
            result = fn(x, *args, False)
        else:
            result = fn(x, batch_sizes, *args)
        return result[0], list(result[1:])

    def _run_python(self, x: Tensor, batch_sizes, states0, record: bool, use_compiled: bool):
        """Stack layers and directions over the hand-written engine. x is time-major; for a
        PackedSequence it is the packed data, padded here to (T, N, H_in) in sorted order."""
        packed = batch_sizes is not None
        if packed:
            x, lengths = pad_packed_sequence(PackedSequence(x, batch_sizes))
            bs = batch_sizes.tolist()
        else:
            bs = lengths = None
        T, B = x.shape[:2]
        D = self.num_directions
        finals = [[] for _ in states0]
        records = []
        layer_input = x
        masks = self._masks or {}
        for layer in range(self.num_layers):
            if "input" in masks:               # variational: one mask per sequence, every step
                layer_input = layer_input * masks["input"][layer]
            outputs, layer_records = [], []
            for d in range(D):
                index = layer * D + d
                rec = StepRecord() if record else None
                xd = layer_input.flip(0) if d else layer_input
                hist = sequence(self.cell, xd, [s[index] for s in states0],
                                self.weights(layer, d), (bs[::-1] if d and bs else bs),
                                use_compiled, rec, self._engine_masks(index))
                out = hist[0]                                        # (T, N, H_out)
                outputs.append(out.flip(0) if d else out)
                for k, h in enumerate(hist):
                    final = h[lengths - 1, torch.arange(B)] if packed and not d else h[T - 1]
                    finals[k].append(final)
                layer_records.append(rec)
            records.append(layer_records)
            layer_input = torch.cat(outputs, -1) if D == 2 else outputs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = dropout(layer_input, self.dropout)
        output = layer_input
        if packed:
            output = output.reshape(T * B, -1)[_packed_index(bs, B, x.device)]
        states = [torch.stack(f) for f in finals]
        trace = Trace(self, records, bs, B) if record else None
        return output, states, trace



def _packed_index(batch_sizes: list[int], B: int, device) -> Tensor:
    """Rows of a flattened (T * N, F) padded tensor that form the PackedSequence data."""
    return torch.cat([torch.arange(n, device=device) + t * B for t, n in enumerate(batch_sizes)])

