"""The body every recurrent layer shares: parameters in torch's names and layout, the call
(input checks, initial states, packed and padded batches, an empty batch), and the layers that
drop in for torch.nn's (LSTM, GRU, RNN) plus ``Recurrent`` for any registered cell.

Mixed in from beside this file: the engine choice (engines.py), the stacking of layers and
directions over the engines (stack.py), torch.nn.RNNBase's surface (surface.py).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import checks
from ..cells import registry
from ..cells.base import Cell, Weights
from ..cells.gru import GRUCellMath
from ..cells.layernorm import LayerNormGRUCellMath, LayerNormLSTMCellMath
from ..cells.lstm import LSTMCellMath
from ..cells.rnn import RNNCellMath
from ..dropout import bernoulli
from ..engine.sequence import Masks
from ..quantization import Quantizable
from ..trace import Trace
from .engines import EngineChoice, check_engine
from .stack import Stacking
from .surface import TorchRNNSurface


class _Recurrent(TorchRNNSurface, EngineChoice, Stacking, Quantizable):
    """Shared body of the recurrent layers: parameters, the call, packing and padding."""

    family: str                                # "lstm", "gru", "rnn", or a registered cell

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, engine: str = "auto",
                 make_cell: Callable[[int, int], Cell], standard: bool = True,
                 weight_drop: float = 0.0, input_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, zoneout=0.0):
        super().__init__()
        name = type(self).__name__
        input_size, hidden_size, num_layers, dropout, proj_size = checks.check_layer_args(
            name, input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
        # regularisers (training only, but zoneout's expectation in evaluation): one DropConnect
        # mask on each W_hh per call; one dropout mask per sequence on each layer's input and on
        # the h_{t-1} the recurrent products see, the same at every step; zoneout masks per step
        self.weight_drop = checks.check_probability(name, "weight_drop", weight_drop)
        self.input_dropout = checks.check_probability(name, "input_dropout", input_dropout)
        self.recurrent_dropout = checks.check_probability(name, "recurrent_dropout",
                                                          recurrent_dropout)
        self._masks: dict | None = None
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        # any value, by its truth value, as torch takes it (and prints it in the repr)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self.cell = cell = make_cell(hidden_size, proj_size)     # from the checked sizes
        # per state in state order (h, c): the probability of keeping the previous value
        self._zone = checks.check_zoneout(name, zoneout, cell.state_names)
        self.zoneout = zoneout if isinstance(zoneout, (int, float)) else tuple(zoneout)
        if self.recurrent_dropout and cell.h_products is None:
            raise ValueError(f"{name}: recurrent_dropout needs a cell that says where h_{{t-1}} "
                             f"meets W_hh (Cell.h_products); {type(cell).__name__} does not")
        standard = standard and not (self.weight_drop or self.input_dropout
                                     or self.recurrent_dropout or any(self._zone))
        self._standard = standard
        check_engine(name, engine, self._standard)
        self.engine = engine

        factory = {"device": device, "dtype": dtype}
        G, H, P = cell.num_gates, hidden_size, proj_size or hidden_size
        D = self.num_directions
        self._param_names = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else P * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                shapes = {"weight_ih": (G * H, layer_in), "weight_hh": cell.weight_hh_shape()}
                if bias:
                    shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
                if proj_size:
                    shapes["weight_hr"] = (P, H)
                if cell.peephole_vectors:
                    shapes["weight_ch"] = (cell.peephole_vectors * H,)
                shapes.update({key: (size,) for key, (size, _) in cell.extra_params().items()})
                for key, shape in shapes.items():
                    self.register_parameter(key + sfx, nn.Parameter(torch.empty(shape, **factory)))
                self._param_names.append({k: k + sfx for k in shapes})
        torch_keys = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        self._all_weights = [list(names.values()) for names in self._param_names]
        self._flat_weights_names = [names[k] for names in self._param_names
                                    for k in torch_keys if k in names]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight ~ U(-1/sqrt(H), 1/sqrt(H)), as torch initialises its recurrent layers;
        a cell's extra parameters that name an initial value (``Cell.extra_params``) take it."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        for names in self._param_names:
            for key, (_, value) in self.cell.extra_params().items():
                if value is not None:
                    nn.init.constant_(getattr(self, names[key]), value)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def weights(self, layer: int, direction: int = 0) -> Weights:
        """The parameters of one layer and direction, in the engine's grouping; inside a
        training call with ``weight_drop``, W_hh through this call's DropConnect mask."""
        index = layer * self.num_directions + direction
        names = self._param_names[index]
        get = lambda key: getattr(self, names[key]) if key in names else None  # noqa: E731
        w_hh = get("weight_hh")
        if self._masks is not None and "weight_hh" in self._masks:
            w_hh = w_hh * self._masks["weight_hh"][index]    # gradients reach kept weights only
        extra = self.cell.extra_params()
        w_ch = torch.cat([get(key) for key in extra]) if extra else get("weight_ch")
        return Weights(get("weight_ih"), w_hh, get("bias_ih"), get("bias_hh"), w_ch,
                       get("weight_hr"))

    def _draw_masks(self, x: Tensor, T: int, B: int) -> dict | None:
        """This call's masks. Dropout masks (training) are scaled by 1 / (1 - p) so that their
        mean is 1: weight_hh[k] (G*H, P) per layer and direction k, input[layer] (N, H_in of the
        layer), h[k] (N, P). zone[k]: per state, (T, N, size) in processing order, 1 where the
        unit keeps its previous value (training), the probability z everywhere (evaluation)."""
        zoned = any(self._zone)
        if not zoned and not (self.training and (self.weight_drop or self.input_dropout
                                                 or self.recurrent_dropout)):
            return None
        # the counter-based generator: torch's bernoulli_ cost a third of a short step
        keep = lambda p, shape: bernoulli(tuple(shape), 1 - p, x) / (1 - p)  # noqa: E731
        masks = {}
        LD, P = len(self._param_names), self.proj_size or self.hidden_size
        if self.training and self.weight_drop:
            masks["weight_hh"] = [keep(self.weight_drop, getattr(self, n["weight_hh"]).shape)
                                  for n in self._param_names]
        if self.training and self.input_dropout:
            H_in = P * self.num_directions
            masks["input"] = [keep(self.input_dropout, (B, self.input_size if k == 0 else H_in))
                              for k in range(self.num_layers)]
        if self.training and self.recurrent_dropout:
            masks["h"] = [keep(self.recurrent_dropout, (B, P)) for _ in range(LD)]
        if zoned:
            sizes = self.cell.state_sizes
            if self.training:
                draw = lambda z, size: bernoulli((T, B, size), z, x)  # noqa
            else:
                draw = lambda z, size: x.new_full((1, 1, 1), z).expand(T, B, size)  # noqa
            masks["zone"] = [tuple(draw(z, size) if z else None
                                   for z, size in zip(self._zone, sizes)) for _ in range(LD)]
        return masks

    def _engine_masks(self, index: int) -> Masks | None:
        """The recurrent dropout and zoneout masks of layer-direction index for the engine."""
        masks = self._masks or {}
        h, zone = masks.get("h"), masks.get("zone")
        if h is None and zone is None:
            return None
        return Masks(None if h is None else h[index], None if zone is None else zone[index])

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

    def _run(self, input, hx, lengths, record: bool):
        name = type(self).__name__
        if torch.onnx.is_in_onnx_export() and not record:
            if torch.jit.is_tracing():
                raise RuntimeError(
                    f"{name}: torch.onnx.export(..., dynamo=False) (the TorchScript exporter) "
                    "cannot write lstmkit::sequence; export with dynamo=True (the default) or "
                    "lstmkit.export_onnx, which write ONNX's own LSTM/GRU/RNN operators")
            # torch.onnx.export: ONNX's own LSTM/GRU/RNN operators, weights converted in the
            # graph (onnx.py owns the layouts and registers its stand-in in Stacking.onnx_form)
            if self.onnx_form is None:
                raise RuntimeError(f"{name}: torch.onnx.export needs lstmkit.layers.onnx "
                                   "imported (import lstmkit does it)")
            return self.onnx_form(self, live=True)(input, hx, lengths)
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
            return output, self._hidden(states)

        engine = self._engine_for(record, x, len(batch_sizes) if packed else x.shape[0], packed)
        if engine == "torch":
            output, states = self._run_torch(x, batch_sizes, states0)
            trace = None
        else:
            self._masks = self._draw_masks(x, len(batch_sizes) if packed else x.shape[0], B)
            try:
                output, states, trace = self._run_python(x, batch_sizes, states0, record,
                                                         engine == "compiled")
            finally:
                masks, self._masks = self._masks, None
            if trace is not None:
                trace.masks = masks or {}

        if packed:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                states = [s.index_select(1, unsorted_indices) for s in states]
        else:
            if unbatched:
                output, states = output.squeeze(1), [s.squeeze(1) for s in states]
            elif self.batch_first:
                output = output.transpose(0, 1)
        hidden = self._hidden(states)
        if trace is None:
            return output, hidden
        trace.finish(output, states, unsorted_indices)
        trace.state = hidden
        return trace

    def _hidden(self, states: list[Tensor]):
        """h_n, or (h_n, c_n) for a cell with a cell state, as torch returns them."""
        return tuple(states) if len(states) > 1 else states[0]

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
        labels = [f"{s}_0" for s in self.cell.state_names]
        hx = checks.check_state_tuple(name, hx, len(sizes), f"({', '.join(labels)})")
        states = []
        for index, (s, size, label) in enumerate(zip(hx, sizes, labels)):
            shape = (LD, size) if unbatched else (LD, B, size)
            if (isinstance(s, Tensor) and s.dtype != x.dtype and s.is_floating_point()
                    and torch.is_autocast_enabled(x.device.type)):
                s = s.to(x.dtype)           # a state autocast left in bfloat16, as torch takes
            if not (isinstance(s, Tensor) and s.shape == shape and s.dtype == x.dtype
                    and s.device == x.device):          # the messages only where one is due
                H = "H_out" if label == "h_0" and self.proj_size else "H"
                layout = f"(num_layers * num_directions, {H})" if unbatched else \
                    f"(num_layers * num_directions, N, {H})"
                torch_name = f"hidden[{index}]" if len(sizes) > 1 else "hidden"
                checks.check_state(name, label, s, shape, x, layout, torch_name)
            s = s.unsqueeze(1) if unbatched else s
            states.append(s if sorted_indices is None else s.index_select(1, sorted_indices))
        return states


def _graph_zero(*tensors: Tensor) -> Tensor:
    """A scalar 0 in the graph of every tensor: added to an empty result, it gives each of them
    a zero gradient, as torch's kernels do for an empty batch."""
    return sum(t.sum() for t in tensors) * 0


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
                 coupled: bool = False, engine: str = "auto", weight_drop: float = 0.0,
                 input_dropout: float = 0.0, recurrent_dropout: float = 0.0, zoneout=0.0,
                 layer_norm: bool = False):
        checks.check_flags("LSTM", peephole=peephole, coupled=coupled, layer_norm=layer_norm)
        if layer_norm and (peephole or coupled or proj_size):
            raise ValueError("LSTM: layer_norm=True has no peephole, coupled or proj_size form "
                             f"(got peephole={peephole}, coupled={coupled}, "
                             f"proj_size={proj_size})")
        self.peephole, self.coupled, self.layer_norm = peephole, coupled, layer_norm
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, engine=engine,
                         make_cell=lambda H, P: (LayerNormLSTMCellMath(H) if layer_norm else
                                                 LSTMCellMath(H, P, peephole, coupled)),
                         standard=not (peephole or coupled or layer_norm),
                         weight_drop=weight_drop, input_dropout=input_dropout,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout)


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
                 proj_size=_NOT_GIVEN, weight_drop: float = 0.0, input_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, zoneout: float = 0.0,
                 layer_norm: bool = False):
        _no_projection("GRU", proj_size)
        checks.check_flags("GRU", reset_after=reset_after, layer_norm=layer_norm)
        if layer_norm and not reset_after:
            raise ValueError("GRU: layer_norm=True has torch's form only (reset_after=True), "
                             "got reset_after=False")
        self.reset_after, self.layer_norm = reset_after, layer_norm
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, engine=engine,
                         make_cell=lambda H, P: (LayerNormGRUCellMath(H) if layer_norm else
                                                 GRUCellMath(H, reset_after)),
                         standard=reset_after and not layer_norm, weight_drop=weight_drop,
                         input_dropout=input_dropout, recurrent_dropout=recurrent_dropout,
                         zoneout=zoneout)


class RNN(_Recurrent):
    """Elman RNN layer, drop-in for ``torch.nn.RNN``: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1}
    + b_hh), or relu with nonlinearity="relu"; see ``lstmkit.cells.rnn``."""

    family = "rnn"
    torch_counterpart = nn.RNN

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None, *,
                 engine: str = "auto", proj_size=_NOT_GIVEN, weight_drop: float = 0.0,
                 input_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0):
        _no_projection("RNN", proj_size)
        RNNCellMath.check_nonlinearity("RNN", nonlinearity)     # first, as torch checks it
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, engine=engine,
                         make_cell=lambda H, P: RNNCellMath(H, nonlinearity),
                         weight_drop=weight_drop, input_dropout=input_dropout,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout)


# ---------------------------------------------------------------------- single-step cells


class Recurrent(_Recurrent):
    """A layer of any registered cell (``lstmkit.cells.registry``), with torch's arguments:
    ``Recurrent(input_size, hidden_size, num_layers=2, cell="peephole")``. Parameters are named
    and laid out as torch's layers name theirs (``weight_ih_l{k}`` of (G * H, H_in) for the
    cell's G gate blocks, ``weight_ch_l{k}`` for its peepholes, ``{name}_l{k}`` for each of
    its ``Cell.extra_params``, such as "lstm-ln"'s LayerNorm gains); it returns ``(output, h_n)``,
    or ``(output, (h_n, c_n))`` for a cell with a cell state. A cell without a compiled kernel
    runs on the python engine. ``make_layer`` gives the torch-compatible class (LSTM, GRU, RNN)
    for the built-in cells."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, cell: str,
                 engine: str = "auto", weight_drop: float = 0.0, input_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, zoneout=0.0, **options):
        entry = registry.get(cell)
        self.family, self.cell_name = entry.name, entry.name
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, engine=engine,
                         make_cell=lambda H, P: entry.make(H, P, **options), standard=False,
                         weight_drop=weight_drop, input_dropout=input_dropout,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout)

    @property
    def mode(self) -> str:
        return self.cell_name.upper()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", cell={self.cell_name!r}"


class sLSTM(Recurrent):  # noqa: N801 (the paper's name)
    """sLSTM layer (Beck et al. 2024, xLSTM, Section 2.2), a ``Recurrent`` of the "slstm" cell;
    equations, stabiliser and layouts in ``lstmkit.cells.slstm``:

        z_t = tanh(z~_t), i_t = exp(i~_t), f_t = sigma(f~_t) or exp(f~_t), o_t = sigma(o~_t)
        c_t = f_t c_{t-1} + i_t z_t,  n_t = f_t n_{t-1} + i_t,  h_t = o_t c_t / n_t

    with x~_t = W_x x_t + R_x h_{t-1} + b_x, R_x block-diagonal over num_heads heads
    (``weight_hh_l{k}`` (4H, H / num_heads) holds the blocks). ``forward(input, state=None)``
    returns ``(output, (h_n, c_n, n_n, m_n))``, each state (D * num_layers, N, H); pass the
    state back in to carry it over the next chunk (truncated BPTT). A zero state (the default)
    starts every unit afresh (m_1 = i~_1). ``lstmkit.cells.slstm.from_xlstm`` converts the
    xlstm package's sLSTMLayer parameters."""

    def __init__(self, input_size: int, hidden_size: int, num_heads: int = 1,
                 num_layers: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False,
                 forget_gate: str = "sigmoid", device=None, dtype=None, *,
                 engine: str = "auto"):
        self.num_heads, self.forget_gate = num_heads, forget_gate
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, cell="slstm", engine=engine,
                         num_heads=num_heads, forget_gate=forget_gate)

    def forward(self, input, state=None, lengths=None):
        """(output, (h_n, c_n, n_n, m_n)) from input and state = (h_0, c_0, n_0, m_0) or None
        (zeros); shapes as ``lstmkit.layers``' (L, N, H_in) -> (L, N, D * H)."""
        if state is not None:
            if not isinstance(state, (tuple, list)):
                raise TypeError("sLSTM: expected state as a tuple (h, c, n, m) of tensors, got "
                                f"{type(state).__name__}")
            if len(state) != 4:
                raise ValueError("sLSTM: expected state as a tuple (h, c, n, m) of 4 tensors, "
                                 f"got {len(state)}")
        return self._run(input, state, lengths, record=False)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_heads={self.num_heads}, " \
            f"forget_gate={self.forget_gate!r}"


LAYERS = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}


def make_layer(cell: str, input_size: int, hidden_size: int, **kwargs) -> _Recurrent:
    """A layer of the registered cell named cell: LSTM, GRU or RNN (drop-in for torch's) for
    the cells they host, with the cell's options (``peephole=True`` for "peephole"), else a
    ``Recurrent``. kwargs: the layer's arguments (num_layers, dropout, bidirectional, ...)."""
    entry = registry.get(cell)
    if entry.sequence_layer is not None:
        return _sequence_layer(entry, input_size, hidden_size, kwargs)
    if kwargs.pop("layer_norm", False):
        if not entry.takes_layer_norm:
            raise ValueError(f"layer_norm is for the cells lstm and gru, got {cell!r} (the "
                             "LayerNorm cells themselves: lstm-ln, gru-ln)")
        kwargs["layer_norm"] = True
    if entry.layer:
        return LAYERS[entry.layer](input_size, hidden_size, **entry.options, **kwargs)
    return Recurrent(input_size, hidden_size, cell=cell, **kwargs)


# what make_layer's callers may pass that a whole-sequence layer need not take: at these values
# the keyword asks for nothing
_NEUTRAL = {"engine": "auto", "weight_drop": 0.0, "input_dropout": 0.0,
            "recurrent_dropout": 0.0, "zoneout": 0.0, "layer_norm": False, "proj_size": 0}


def _sequence_layer(entry, input_size: int, hidden_size: int, kwargs: dict):
    """A whole-sequence cell's layer (``registry.CellType.sequence_layer``); a keyword it does
    not take is dropped at its neutral value and refused by name otherwise."""
    cls = entry.sequence_layer
    takes = inspect.signature(cls).parameters
    args = {**entry.options}
    for key, value in kwargs.items():
        if key in takes:
            args[key] = value
        elif key in _NEUTRAL and value == _NEUTRAL[key]:
            continue
        else:
            raise ValueError(f"cell {entry.name!r} ({cls.__name__}) does not take {key}="
                             f"{value!r}")
    return cls(input_size, hidden_size, **args)
