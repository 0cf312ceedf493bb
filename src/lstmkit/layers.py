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

import math
import warnings
from collections.abc import Callable

import torch
from torch import _VF, Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import checks
from .cells.base import Cell, Weights
from .cells.gru import GRUCellMath
from .cells.lstm import LSTMCellMath
from .cells.rnn import RNNCellMath
from .dropout import dropout
from .engine.compiled import bf16_products, step_macs, trains_faster
from .engine.compiled import usable as compiled_usable
from .engine.ops import plain_eager, sequence
from .engine.sequence import StepRecord
from .quantization import QUANTIZABLE, Quantizable
from .trace import Trace

ENGINES = ("auto", "python", "torch", "compiled")
# "auto": up to this many steps per call the compiled engine beats torch's fused LSTM (which
# repacks the weights on every call; bench_generate.py)
AUTO_SHORT_T = 4
# "auto" under bfloat16 autocast: from this many multiply-adds per step's recurrent product on,
# the compiled engine's bfloat16 products beat torch's bfloat16 LSTM (bench_bf16.py, three runs:
# 0.82-0.91x its time at 67M (batch 64 x 512 units); at 8.4M (32 x 256) 0.85x, 1.09x, 1.18x;
# 1.17-1.66x at 3.2M and 1M)
AUTO_BF16_MACS = 32_000_000


# lstmkit's keywords and their defaults: printed in a repr, named in errors, where they differ
VARIANT_DEFAULTS = {"peephole": False, "coupled": False, "reset_after": True}


def _variant(module: nn.Module) -> str:
    """The variant keywords a module differs by, e.g. "peephole=True, coupled=True"."""
    return ", ".join(f"{k}={getattr(module, k)}" for k, default in VARIANT_DEFAULTS.items()
                     if getattr(module, k, default) != default)


def _lstmkit_repr(module: nn.Module) -> str:
    """What a repr adds to torch's: the variant keywords (they change the equations). The engine
    (how the same numbers are computed, ``module.engine``) is left out, so that a standard
    layer's repr is torch's on every engine, as code comparing reprs expects."""
    variant = _variant(module)
    return ", " + variant if variant else ""


def _check_engine(name: str, engine: str, standard: bool) -> None:
    if engine not in ENGINES:
        raise ValueError(f"{name}: engine must be one of {ENGINES}, got {engine!r}")
    if engine == "torch" and not standard:
        raise ValueError(f"{name}: engine='torch' runs torch's fused kernels, which have no "
                         "peephole, coupled-gate or reset_after=False form; use engine='python' "
                         "or 'auto'")


class _Recurrent(Quantizable):
    """Shared body of LSTM, GRU and RNN: parameters, stacking, directions, packing, engines."""

    family: str                                # "lstm", "gru" or "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, engine: str = "auto",
                 make_cell: Callable[[int, int], Cell], peepholes: int = 0,
                 standard: bool = True):
        super().__init__()
        name = type(self).__name__
        input_size, hidden_size, num_layers, dropout, proj_size = checks.check_layer_args(
            name, input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        # any value, by its truth value, as torch takes it (and prints it in the repr)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self.cell = cell = make_cell(hidden_size, proj_size)     # from the checked sizes
        self._standard = standard
        _check_engine(name, engine, self._standard)
        self.engine = engine

        factory = {"device": device, "dtype": dtype}
        G, H, P = cell.num_gates, hidden_size, proj_size or hidden_size
        D = self.num_directions
        self._param_names = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else P * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                shapes = {"weight_ih": (G * H, layer_in), "weight_hh": (G * H, P)}
                if bias:
                    shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
                if proj_size:
                    shapes["weight_hr"] = (P, H)
                if peepholes:
                    shapes["weight_ch"] = (peepholes * H,)
                for key, shape in shapes.items():
                    self.register_parameter(key + sfx, nn.Parameter(torch.empty(shape, **factory)))
                self._param_names.append({k: k + sfx for k in shapes})
        torch_keys = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        self._all_weights = [list(names.values()) for names in self._param_names]
        self._flat_weights_names = [names[k] for names in self._param_names
                                    for k in torch_keys if k in names]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight ~ U(-1/sqrt(H), 1/sqrt(H)), as torch initialises its recurrent layers."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def mode(self) -> str:
        """torch's name of the recurrence: "LSTM", "GRU", "RNN_TANH" or "RNN_RELU"."""
        if self.family == "rnn":
            return "RNN_" + self.cell.nonlinearity.upper()
        return self.family.upper()

    def weights(self, layer: int, direction: int = 0) -> Weights:
        """The parameters of one layer and direction, in the engine's grouping."""
        names = self._param_names[layer * self.num_directions + direction]
        get = lambda key: getattr(self, names[key]) if key in names else None  # noqa: E731
        return Weights(get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"),
                       get("weight_ch"), get("weight_hr"))

    # torch.nn.RNNBase's surface, which libraries read (names as torch's, lists kept current by
    # computing them on access: after .to(), load_state_dict or assigning a new Parameter).
    # ``_flat_weights_names`` lists torch's parameters only, per layer and direction w_ih, w_hh,
    # [b_ih, b_hh], [w_hr]: that list feeds torch's fused kernels, which have no peepholes, so a
    # peephole's ``weight_ch_l{k}`` appears only in ``_all_weights`` / ``all_weights``, last in
    # its layer and direction.
    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters per layer and direction, as torch's ``all_weights``."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """torch packs the weights for cuDNN here; the engines here read them as they are."""

    def extra_repr(self) -> str:
        """torch's repr for a standard layer, e.g. ``LSTM(10, 20, num_layers=2)``; lstmkit's
        variant keywords follow where they differ from their defaults."""
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s + _lstmkit_repr(self)

    def to_torch(self) -> nn.Module:
        """The equivalent ``torch.nn`` module: same configuration, device, dtype and training
        mode, a copy of the parameters. ValueError for a variant torch has no form of."""
        if not self._standard:
            raise ValueError(f"{type(self).__name__}: {_variant(self)} has no torch.nn form")
        w = self.weights(0).w_ih
        kw = {"num_layers": self.num_layers, "bias": self.bias, "batch_first": self.batch_first,
              "dropout": self.dropout, "bidirectional": self.bidirectional,
              "device": w.device, "dtype": w.dtype}
        if self.family == "lstm":
            kw["proj_size"] = self.proj_size
        if self.family == "rnn":
            kw["nonlinearity"] = self.cell.nonlinearity
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # dropout with one layer, warned already
            module = self.torch_counterpart(self.input_size, self.hidden_size, **kw)
        module.load_state_dict(self.state_dict())
        return module.train(self.training)

    # ------------------------------------------------------------------ forward
    def forward(self, input, hx=None, lengths=None):
        """Run the layer. Returns ``(output, h_n)``, for LSTM ``(output, (h_n, c_n))``.

        ``lengths`` (optional, an lstmkit addition): for a padded batch, each sequence's length,
        longest first; the output is zero past each length and the final states are those at
        each sequence's last step, as if the batch had been packed.
        """
        return self._run(input, hx, lengths, record=False)

    def trace(self, input, hx=None, lengths=None) -> Trace:
        """Run the hand-written engine and keep every gate and state (see ``lstmkit.Trace``)."""
        return self._run(input, hx, lengths, record=True)

    def _engine_for(self, record: bool, x: Tensor, T: int, packed: bool) -> str:
        """The engine a call of T steps runs on: "torch", "python" or "compiled"."""
        _check_engine(type(self).__name__, self.engine, self._standard)
        if self.engine != "auto":
            return "python" if record and self.engine == "torch" else self.engine
        if not compiled_usable(self.cell, x):
            return "torch" if self._standard and not record else "python"
        if not plain_eager(x):
            # under compile, export, jit.trace, vmap: one choice for every shape (a choice by T
            # or B would pin them in the graph; torch.export refuses a dynamic length that the
            # code specialised), and the operator, which has a batching rule (torch's LSTM has
            # none)
            return "compiled"
        if self.family == "lstm" and self._standard and not (record or packed) and \
                T > AUTO_SHORT_T:
            if bf16_products(self.cell, x):
                return "compiled" if step_macs(self.cell, x) >= AUTO_BF16_MACS else "torch"
            if not torch.is_autocast_enabled(x.device.type) and self._training(x) and \
                    trains_faster(x):
                return "compiled"
            return "torch"                     # oneDNN's fused LSTM: level or faster
        return "compiled"

    def _training(self, x: Tensor) -> bool:
        """True when this call records a graph to differentiate (its backward follows)."""
        return torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _run(self, input, hx, lengths, record: bool):
        name = type(self).__name__
        if torch.onnx.is_in_onnx_export() and not record:
            if torch.jit.is_tracing():
                raise RuntimeError(
                    f"{name}: torch.onnx.export(..., dynamo=False) (the TorchScript exporter) "
                    "cannot write lstmkit::sequence; export with dynamo=True (the default) or "
                    "lstmkit.export_onnx, which write ONNX's own LSTM/GRU/RNN operators")
            # torch.onnx.export: ONNX's own LSTM/GRU/RNN operators, weights converted in the
            # graph (lstmkit.export.layers owns the layouts)
            from .export.layers import OnnxLayer
            return OnnxLayer(self, live=True)(input, hx, lengths)
        if lengths is not None:
            if isinstance(input, PackedSequence):
                raise ValueError(f"{name}: lengths is for a padded batch; a PackedSequence "
                                 "carries its own lengths")
            return self._run_padded_with_lengths(input, hx, lengths, record)

        packed = isinstance(input, PackedSequence)
        if packed:
            x, batch_sizes, sorted_indices, unsorted_indices = input
            checks.check_input(name, x, self.input_size, self.batch_first, packed=True)
            unbatched = False
            B = int(batch_sizes[0])
        else:
            checks.check_input(name, input, self.input_size, self.batch_first, packed=False)
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else input
            if self.batch_first and not unbatched:
                x = x.transpose(0, 1)                                   # (L, N, H_in)
            batch_sizes = sorted_indices = unsorted_indices = None
            B = x.shape[1]
        w = self.weights(0).w_ih
        if x.dtype != w.dtype and x.is_floating_point() and \
                torch.is_autocast_enabled(x.device.type):
            x = x.to(w.dtype)                  # e.g. bfloat16 from a layer autocast ran before
        checks.check_dtype_matches(name, x, w)
        states0 = self._initial_states(hx, x, B, unbatched, sorted_indices)
        if B == 0 and record:
            raise ValueError(f"{name}: trace needs at least one sequence, got an empty batch "
                             f"of shape {checks.shape_str(input.shape)}")
        if B == 0:
            output, states = self._empty_batch(x, states0)
            if self.batch_first:
                output = output.transpose(0, 1)
            return output, tuple(states) if self.family == "lstm" else states[0]

        engine = self._engine_for(record, x, len(batch_sizes) if packed else x.shape[0], packed)
        if engine == "torch":
            output, states = self._run_torch(x, batch_sizes, states0)
            trace = None
        else:
            output, states, trace = self._run_python(x, batch_sizes, states0, record,
                                                     engine == "compiled")

        if packed:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                states = [s.index_select(1, unsorted_indices) for s in states]
        else:
            if unbatched:
                output, states = output.squeeze(1), [s.squeeze(1) for s in states]
            elif self.batch_first:
                output = output.transpose(0, 1)
        hidden = tuple(states) if self.family == "lstm" else states[0]
        if trace is None:
            return output, hidden
        trace.finish(output, states, unsorted_indices)
        return trace

    def _empty_batch(self, x: Tensor, states0: list[Tensor]):
        """torch's result for a batch of no sequences, before any engine runs: output
        (L, 0, D * H_out) and the states (D * num_layers, 0, size), all empty, in the graph of
        the input, h_0 and every parameter, whose gradients then come out as zeros, as torch's
        do."""
        zero = _graph_zero(x, *states0, *self.parameters())
        H_out = self.proj_size or self.hidden_size
        output = x.new_zeros(x.shape[0], 0, self.num_directions * H_out) + zero
        return output, [s + zero for s in states0]

    def _run_padded_with_lengths(self, input, hx, lengths, record: bool):
        name = type(self).__name__
        checks.check_input(name, input, self.input_size, self.batch_first, packed=False)
        if input.dim() != 3:
            raise ValueError(f"{name}: lengths needs a batched 3-D input, got shape "
                             f"{checks.shape_str(input.shape)}")
        T = input.shape[1] if self.batch_first else input.shape[0]
        B = input.shape[0] if self.batch_first else input.shape[1]
        lengths = checks.check_lengths(name, lengths, B, T)
        if B == 0:
            return self._run(input, hx, None, record)              # nothing to pack
        packed = pack_padded_sequence(input, lengths, batch_first=self.batch_first)
        result = self._run(packed, hx, None, record)
        output = result.output if record else result[0]
        output, _ = pad_packed_sequence(output, batch_first=self.batch_first, total_length=T)
        if record:
            result.output = output
            result.pad_time(T)
            return result
        return output, result[1]

    def _initial_states(self, hx, x: Tensor, B: int, unbatched: bool, sorted_indices):
        """h_0 (and c_0) as (D * num_layers, N, size) tensors in the engine's batch order."""
        name = type(self).__name__
        LD = self.num_layers * self.num_directions
        sizes = self.cell.state_sizes
        if hx is None:
            return [x.new_zeros(LD, B, size) for size in sizes]
        hx = checks.check_state_tuple(name, hx, len(sizes), "(h_0, c_0)")
        states = []
        for s, size, label in zip(hx, sizes, ("h_0", "c_0")):
            shape = (LD, size) if unbatched else (LD, B, size)
            if (isinstance(s, Tensor) and s.dtype != x.dtype and s.is_floating_point()
                    and torch.is_autocast_enabled(x.device.type)):
                s = s.to(x.dtype)           # a state autocast left in bfloat16, as torch takes
            if not (isinstance(s, Tensor) and s.shape == shape and s.dtype == x.dtype
                    and s.device == x.device):          # the messages only where one is due
                H = "H_out" if label == "h_0" and self.proj_size else "H"
                layout = f"(num_layers * num_directions, {H})" if unbatched else \
                    f"(num_layers * num_directions, N, {H})"
                torch_name = f"hidden[{label == 'c_0':d}]" if len(sizes) == 2 else "hidden"
                checks.check_state(name, label, s, shape, x, layout, torch_name)
            s = s.unsqueeze(1) if unbatched else s
            states.append(s if sorted_indices is None else s.index_select(1, sorted_indices))
        return states

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
        for layer in range(self.num_layers):
            outputs, layer_records = [], []
            for d in range(D):
                index = layer * D + d
                rec = StepRecord() if record else None
                xd = layer_input.flip(0) if d else layer_input
                hist = sequence(self.cell, xd, [s[index] for s in states0],
                                self.weights(layer, d), (bs[::-1] if d and bs else bs),
                                use_compiled, rec)
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
        trace = Trace(self, records, bs, T, B) if record else None
        return output, states, trace


def _graph_zero(*tensors: Tensor) -> Tensor:
    """A scalar 0 in the graph of every tensor: added to an empty result, it gives each of them
    a zero gradient, as torch's kernels do for an empty batch."""
    return sum(t.sum() for t in tensors) * 0


def _packed_index(batch_sizes: list[int], B: int, device) -> Tensor:
    """Rows of a flattened (T * N, F) padded tensor that form the PackedSequence data."""
    return torch.cat([torch.arange(n, device=device) + t * B for t, n in enumerate(batch_sizes)])


_NOT_GIVEN = object()


def _no_projection(name: str, proj_size) -> None:
    """torch.nn.GRU and RNN raise ValueError for any proj_size keyword, 0 included."""
    if proj_size is not _NOT_GIVEN:
        raise ValueError(f"{name}: proj_size argument is only supported for LSTM, not RNN or "
                         f"GRU; got proj_size={proj_size!r}")


class LSTM(_Recurrent):
    """Long Short-Term Memory layer, drop-in for ``torch.nn.LSTM``; see ``lstmkit.cells.lstm``.

        i_t = sigma(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
        f_t = sigma(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        o_t = sigma(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)                     (h_t = W_hr (o_t * tanh(c_t)) with proj_size)

    peephole=True adds p_i * c_{t-1}, p_f * c_{t-1} and p_o * c_t inside i_t, f_t, o_t
    (``weight_ch_l{k}`` = (p_i|p_f|p_o)); coupled=True sets i_t = 1 - f_t and drops the i rows.
    """

    family = "lstm"
    torch_counterpart = nn.LSTM

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, peephole: bool = False,
                 coupled: bool = False, engine: str = "auto"):
        checks.check_flags("LSTM", peephole=peephole, coupled=coupled)
        self.peephole, self.coupled = peephole, coupled
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, engine=engine,
                         make_cell=lambda H, P: LSTMCellMath(H, P, peephole, coupled),
                         peepholes=(2 if coupled else 3) if peephole else 0,
                         standard=not (peephole or coupled))


class GRU(_Recurrent):
    """Gated Recurrent Unit layer, drop-in for ``torch.nn.GRU``; see ``lstmkit.cells.gru``.

        r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    reset_after=False is Cho et al. 2014's form:
    n_t = tanh(W_in x_t + b_in + W_hn (r_t * h_{t-1}) + b_hn).
    """

    family = "gru"
    torch_counterpart = nn.GRU

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, reset_after: bool = True, engine: str = "auto",
                 proj_size=_NOT_GIVEN):
        _no_projection("GRU", proj_size)
        checks.check_flags("GRU", reset_after=reset_after)
        self.reset_after = reset_after
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, engine=engine,
                         make_cell=lambda H, P: GRUCellMath(H, reset_after),
                         standard=reset_after)


class RNN(_Recurrent):
    """Elman RNN layer, drop-in for ``torch.nn.RNN``: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1}
    + b_hh), or relu with nonlinearity="relu"; see ``lstmkit.cells.rnn``."""

    family = "rnn"
    torch_counterpart = nn.RNN

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None, *,
                 engine: str = "auto", proj_size=_NOT_GIVEN):
        _no_projection("RNN", proj_size)
        RNNCellMath.check_nonlinearity("RNN", nonlinearity)     # first, as torch checks it
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, engine=engine,
                         make_cell=lambda H, P: RNNCellMath(H, nonlinearity))


# ---------------------------------------------------------------------- single-step cells
class _StepCell(Quantizable):
    """One time step: ``torch.nn.*Cell``-compatible parameters (weight_ih, weight_hh, bias_ih,
    bias_hh, and weight_ch for peepholes) and call signature."""

    family: str

    def __init__(self, input_size: int, hidden_size: int, bias: bool, device, dtype, *,
                 make_cell: Callable[[int], Cell], peepholes: int = 0, engine: str = "auto",
                 standard: bool = True):
        super().__init__()
        name = type(self).__name__
        input_size, hidden_size = checks.check_cell_args(name, input_size, hidden_size, bias)
        _check_engine(name, engine, standard)
        # bias as given, counted by its truth value, as torch.nn's cells take (and print) it
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.cell, self.engine, self._standard = make_cell(hidden_size), engine, standard
        factory = {"device": device, "dtype": dtype}
        G, H = self.cell.num_gates, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(G * H, H, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G * H, **factory))
            self.bias_hh = nn.Parameter(torch.empty(G * H, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if peepholes:
            self.weight_ch = nn.Parameter(torch.empty(peepholes * H, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def weights(self) -> Weights:
        return Weights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                       getattr(self, "weight_ch", None))

    def extra_repr(self) -> str:
        """torch's repr for a standard cell, e.g. ``LSTMCell(10, 20)``; then lstmkit's variant
        keywords where they differ from their defaults."""
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s + _lstmkit_repr(self)

    def to_torch(self) -> nn.Module:
        """The equivalent ``torch.nn`` cell (same configuration, device, dtype, parameters).
        ValueError for a variant torch has no form of."""
        if not self._standard:
            raise ValueError(f"{type(self).__name__}: {_variant(self)} has no torch.nn form")
        kw = {"bias": self.bias, "device": self.weight_ih.device, "dtype": self.weight_ih.dtype}
        if self.family == "rnn":
            kw["nonlinearity"] = self.nonlinearity
        module = self.torch_counterpart(self.input_size, self.hidden_size, **kw)
        module.load_state_dict(self.state_dict())
        return module.train(self.training)

    def forward(self, input: Tensor, hx=None):
        """input (N, H_in) or (H_in,); hx (N, H) or (H,), for LSTMCell a tuple (h, c).
        Returns h' (N, H), for LSTMCell (h', c')."""
        name = type(self).__name__
        checks.check_step_input(name, input, self.input_size)
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input                  # (N, H_in)
        B, H = x.shape[0], self.hidden_size
        n_states = len(self.cell.state_sizes)
        if hx is None:
            states = [x.new_zeros(B, H) for _ in range(n_states)]
        else:
            hx = checks.check_state_tuple(name, hx, n_states, "(h, c)")
            shape, layout = ((H,), "(H,) for unbatched input") if unbatched else ((B, H), "(N, H)")
            for k, (s, label) in enumerate(zip(hx, ("h", "c"))):
                if isinstance(s, Tensor) and s.dim() not in (1, 2):
                    torch_name = f"hx[{k}]" if n_states == 2 else "hidden"
                    raise ValueError(f"{name}: expected {label} of shape {layout}, got "
                                     f"{s.dim()} dimensions with shape {checks.shape_str(s.shape)}"
                                     f" (Expected {torch_name} to be 1D or 2D, got {s.dim()}D "
                                     "instead)")
            states = [checks.check_state(name, label, s, shape, x, layout, cell_index=k)
                      .reshape(B, H) for k, (s, label) in enumerate(zip(hx, ("h", "c")))]
        checks.check_dtype_matches(name, x, self.weight_ih, RuntimeError)  # after shapes, as torch
        _check_engine(name, self.engine, self._standard)
        if B == 0 or H == 0:
            # nothing to compute; in the graph of input, hx and weights (zero gradients)
            zero = _graph_zero(x, *states, *self.parameters())
            out = [s + zero for s in states]
        elif self.engine not in ("python", "compiled") and self._standard:
            out = self._torch_step(x, states)
        else:
            compiled = self.engine == "compiled" or (self.engine == "auto"
                                                     and compiled_usable(self.cell, x))
            hist = sequence(self.cell, x.unsqueeze(0), states, self.weights(), None, compiled)
            out = [h[0] for h in hist]
        if unbatched:
            out = [o.squeeze(0) for o in out]
        return tuple(out) if n_states == 2 else out[0]

    def _torch_step(self, x, states):
        w = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if self.family == "lstm":
            return list(_VF.lstm_cell(x, tuple(states), *w))
        if self.family == "gru":
            return [_VF.gru_cell(x, states[0], *w)]
        fn = _VF.rnn_tanh_cell if self.cell.nonlinearity == "tanh" else _VF.rnn_relu_cell
        return [fn(x, states[0], *w)]


class LSTMCell(_StepCell):
    """One LSTM step, drop-in for ``torch.nn.LSTMCell``; peephole / coupled as in ``LSTM``."""

    family = "lstm"
    torch_counterpart = nn.LSTMCell

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None, *, peephole: bool = False, coupled: bool = False,
                 engine: str = "auto"):
        checks.check_flags("LSTMCell", peephole=peephole, coupled=coupled)
        self.peephole, self.coupled = peephole, coupled
        super().__init__(input_size, hidden_size, bias, device, dtype,
                         make_cell=lambda H: LSTMCellMath(H, 0, peephole, coupled),
                         peepholes=(2 if coupled else 3) if peephole else 0, engine=engine,
                         standard=not (peephole or coupled))


class GRUCell(_StepCell):
    """One GRU step, drop-in for ``torch.nn.GRUCell``; reset_after as in ``GRU``."""

    family = "gru"
    torch_counterpart = nn.GRUCell

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None, *, reset_after: bool = True, engine: str = "auto"):
        checks.check_flags("GRUCell", reset_after=reset_after)
        self.reset_after = reset_after
        super().__init__(input_size, hidden_size, bias, device, dtype,
                         make_cell=lambda H: GRUCellMath(H, reset_after), engine=engine,
                         standard=reset_after)


class RNNCell(_StepCell):
    """One Elman RNN step, drop-in for ``torch.nn.RNNCell``. An unknown nonlinearity is a
    ValueError here at construction; torch's cell takes it and raises at its first call."""

    family = "rnn"
    torch_counterpart = nn.RNNCell

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None, *, engine: str = "auto"):
        RNNCellMath.check_nonlinearity("RNNCell", nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, device, dtype,
                         make_cell=lambda H: RNNCellMath(H, nonlinearity), engine=engine)


# torch.ao's dynamic quantization treats these as their torch counterparts (quantization.py)
QUANTIZABLE.extend([LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell])
