"""Single-step cells that drop in for ``torch.nn.LSTMCell``, ``GRUCell`` and ``RNNCell``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import _VF, Tensor, nn

from .. import checks
from ..cells.base import Cell, Weights
from ..cells.gru import GRUCellMath
from ..cells.lstm import LSTMCellMath
from ..cells.rnn import RNNCellMath
from ..engine.compiled import usable as compiled_usable
from ..engine.ops import sequence
from ..quantization import Quantizable
from .engines import check_engine
from .recurrent import _graph_zero
from .surface import _lstmkit_repr, _variant


class _StepCell(Quantizable):
    """One time step: ``torch.nn.*Cell``-compatible parameters (weight_ih, weight_hh, bias_ih,
    bias_hh, and weight_ch for peepholes) and call signature."""

    family: str

    def __init__(self, input_size: int, hidden_size: int, bias: bool, device, dtype, *,
                 make_cell: Callable[[int], Cell], engine: str = "auto", standard: bool = True):
        super().__init__()
        name = type(self).__name__
        input_size, hidden_size = checks.check_cell_args(name, input_size, hidden_size, bias)
        check_engine(name, engine, standard)
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
        if self.cell.peephole_vectors:
            self.weight_ch = nn.Parameter(torch.empty(self.cell.peephole_vectors * H,
                                                      **factory))
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
        check_engine(name, self.engine, self._standard)
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
                         make_cell=lambda H: LSTMCellMath(H, 0, peephole, coupled), engine=engine,
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
