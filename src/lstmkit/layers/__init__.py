"""Recurrent layers that drop in for ``torch.nn.LSTM``, ``GRU`` and ``RNN``, and their ``*Cell``s.

Shapes (as torch.nn names them): N batch, L sequence length, D = 2 if bidirectional else 1,
H_in input_size, H hidden_size, H_out = proj_size or H.

    input    (L, N, H_in), (N, L, H_in) with batch_first, (L, H_in) unbatched, or a PackedSequence
    h_0, h_n (D * num_layers, N, H_out)          c_0, c_n (D * num_layers, N, H)   [LSTM only]
    output   (L, N, D * H_out), (N, L, D * H_out) with batch_first, or a PackedSequence

Parameters are named and laid out as torch's (``weight_ih_l{k}{_reverse}`` of shape
(G * H, H_in) for layer 0, gates stacked (W_i|W_f|W_g|W_o) for LSTM and (W_r|W_z|W_n) for GRU),
so ``load_state_dict`` works both ways with torch.nn modules. The variants add what torch lacks:
peepholes ``weight_ch_l{k}{_reverse}`` and coupled input-forget gates (no input-gate rows).

The layers follow torch.nn 2.13's contract: its constructor checks and exception classes, its
forward errors' classes (lstmkit's messages, ending in torch's words), an empty batch, ``mode``,
``_flat_weights``, ``all_weights``, ``flatten_parameters()`` and its repr. They are not
subclasses of nn.LSTM and the rest, on purpose: code that sees ``isinstance(m, nn.LSTM)`` calls
torch's kernels on torch's internals, which would silently drop a variant's peepholes or coupled
gate; ``to_torch()`` gives the equivalent torch module of a standard layer, and quantization.py
covers torch.ao.

``engine``: "python" walks time with the hand-written BPTT of ``lstmkit.engine.sequence``;
"compiled" runs the same BPTT in C++ (``lstmkit.engine.compiled``, every configuration);
"torch" calls torch's fused kernels (standard configurations only); "auto" takes the fastest
correct one, as measured in benchmarks/ (BENCHMARKS.md): torch's fused kernel for a standard
LSTM over a padded batch of more than 4 steps, except for training calls (grad enabled, weights
or input requiring it) that the compiled engine runs on brgemm (``trains_faster``: float32,
AVX-512, up to 64 rows, 16 steps or more); otherwise the compiled engine (GRU, RNN, variants,
traces, packed batches, short calls such as generating one token at a time); the python engine
where the compiled one cannot run; wherever torch traces or transforms the call (compile,
export, jit.trace, vmap) the compiled engine for every shape (a choice by length would pin it
in the graph). Under bfloat16 autocast (torch's kernels then run in bfloat16, the compiled
engine its matrix products, with gates, cell state and outputs in float32) the same, except that
a standard LSTM whose per-step product has at least AUTO_BF16_MACS multiply-adds runs compiled.
"""

from __future__ import annotations

from ..quantization import QUANTIZABLE
from . import onnx as _onnx  # noqa: F401 (registers the layers' stand-in for torch.onnx.export)
from .engines import AUTO_BF16_MACS, AUTO_SHORT_T, ENGINES
from .minrnn import minGRU, minLSTM
from .mlstm import mLSTM
from .recurrent import GRU, LSTM, RNN, Recurrent, _Recurrent, make_layer, sLSTM
from .step_cells import GRUCell, LSTMCell, RNNCell, _StepCell
from .surface import VARIANT_DEFAULTS
from .xlstm import xLSTM

__all__ = ["LSTM", "GRU", "RNN", "Recurrent", "sLSTM", "mLSTM", "xLSTM", "minGRU", "minLSTM",
           "LSTMCell", "GRUCell", "RNNCell", "make_layer", "ENGINES", "AUTO_SHORT_T",
           "AUTO_BF16_MACS", "VARIANT_DEFAULTS", "_Recurrent", "_StepCell"]

# torch.ao's dynamic quantization treats these as their torch counterparts (quantization.py)
QUANTIZABLE.extend([LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell])
