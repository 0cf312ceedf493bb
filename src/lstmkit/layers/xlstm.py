"""A mixed xLSTM stack (Beck et al. 2024): mLSTM layers with sLSTM layers at chosen depths,
the paper's xLSTM[a:b] (a mLSTM to b sLSTM) as plain recurrent layers.

The paper's blocks wrap each cell in projections, a causal convolution and normalisation; here
the layers are the cells alone, stacked like torch's ``num_layers`` (dropout between layers), so
that a task's model can swap an LSTM stack for an xLSTM stack of the same depth and width.

Shapes: L steps, N batch, D = 2 if bidirectional, H hidden_size; layer k reads D * H features
(H_in for k = 0). The state is (C, n, m, h, c, n_s, m_s): the mLSTM layers' states stacked over
those layers (Lm * D, N, NH, d, d), (Lm * D, N, NH, d), (Lm * D, N, NH), then the sLSTM layers'
(h, c, n, m), each (Ls * D, N, H), in depth order within each kind.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..trace import SequenceTrace
from .mlstm import mLSTM
from .recurrent import sLSTM


def default_slstm_at(num_layers: int) -> tuple[int, ...]:
    """Every second layer from the second on: xLSTM[1:1] for an even depth (one layer: an
    mLSTM alone, nothing to mix)."""
    return tuple(range(1, num_layers, 2))


class xLSTM(nn.Module):  # noqa: N801 (the paper's name)
    """mLSTM layers with sLSTM layers at the depths ``slstm_at`` (0-based; default every second
    layer from the second); see the module docstring for shapes. ``forward(input, state=None,
    lengths=None)`` returns ``(output, state)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 2,
                 num_heads: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False,
                 slstm_at: tuple[int, ...] | None = None, engine: str = "auto", device=None,
                 dtype=None):
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"xLSTM: num_layers must be a positive int, got {num_layers!r}")
        at = default_slstm_at(num_layers) if slstm_at is None else tuple(slstm_at)
        if any(not isinstance(k, int) or not 0 <= k < num_layers for k in at) \
                or len(set(at)) != len(at):
            raise ValueError(f"xLSTM: slstm_at must name distinct layers in 0..{num_layers - 1}"
                             f", got {slstm_at!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"xLSTM: dropout must be in [0, 1), got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.num_heads, self.batch_first, self.dropout = num_heads, batch_first, float(dropout)
        self.bidirectional, self.slstm_at = bidirectional, tuple(sorted(at))
        D = 2 if bidirectional else 1
        self.num_directions = D
        kw = {"num_heads": num_heads, "bias": bias, "bidirectional": bidirectional,
              "engine": engine, "device": device, "dtype": dtype}
        self.layers = nn.ModuleList(
            (sLSTM if k in self.slstm_at else mLSTM)(input_size if k == 0 else D * hidden_size,
                                                     hidden_size, **kw)
            for k in range(num_layers))

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """The shapes of the state's seven tensors for a batch of ``batch`` sequences."""
        D, H, NH = self.num_directions, self.hidden_size, self.num_heads
        lm, ls = self.num_layers - len(self.slstm_at), len(self.slstm_at)
        d = H // NH
        return [(lm * D, batch, NH, d, d), (lm * D, batch, NH, d), (lm * D, batch, NH),
                *[(ls * D, batch, H)] * 4]

    def _kinds(self) -> tuple[list[int], list[int]]:
        """(the mLSTM layers' depths, the sLSTM layers' depths)."""
        return ([k for k in range(self.num_layers) if k not in self.slstm_at],
                list(self.slstm_at))

    def forward(self, input: Tensor, state=None, lengths=None):
        return self._run(input, state, lengths, None)

    def trace(self, input: Tensor, state=None, lengths=None) -> SequenceTrace:
        """``forward``, each layer traced (``mLSTM.trace``, ``sLSTM.trace``): a
        ``lstmkit.trace.SequenceTrace`` whose ``steps[k]`` is layer k's row of directions."""
        if not isinstance(input, Tensor) or input.dim() != 3:
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"xLSTM: trace takes a batched 3-D input, got {got}")
        steps: list = []
        output, state = self._run(input, state, lengths, steps)
        return SequenceTrace(output, state, steps)

    def _run(self, input: Tensor, state, lengths, steps: list | None):
        if state is not None and (not isinstance(state, (tuple, list)) or len(state) != 7):
            got = f"{len(state)} tensors" if isinstance(state, (tuple, list)) else \
                type(state).__name__
            raise ValueError("xLSTM: state should be a tuple (C, n, m, h, c, n_s, m_s) of seven "
                             f"tensors, got {got}")
        x = input.transpose(0, 1) if self.batch_first and input.dim() == 3 else input
        D = self.num_directions
        mk, sk = self._kinds()
        finals: dict[int, tuple] = {}
        for k, layer in enumerate(self.layers):
            part = None
            if state is not None:
                s_m = k in sk
                j = (sk if s_m else mk).index(k)
                part = tuple(t[j * D:(j + 1) * D] for t in (state[3:] if s_m else state[:3]))
            kwargs = {} if lengths is None else {"lengths": lengths}
            if steps is None:
                x, finals[k] = layer(x, part, **kwargs)
            else:
                traced = layer.trace(x, part, **kwargs)
                x, finals[k] = traced.output, traced.state
                steps.append(traced.steps[0])
            if self.dropout and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        unbatched = x.dim() == 2
        shapes = self.state_shapes(1 if unbatched else x.shape[1])
        if unbatched:
            shapes = [s[:1] + s[2:] for s in shapes]

        def stack(depths, first, n):
            if depths:
                return [torch.cat([finals[k][i] for k in depths]) for i in range(n)]
            return [x.new_zeros(s) for s in shapes[first:first + n]]

        out_state = (*stack(mk, 0, 3), *stack(sk, 3, 4))
        return (x.transpose(0, 1) if self.batch_first and not unbatched else x), out_state

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, " \
            f"slstm_at={self.slstm_at}"
        if self.num_heads != 1:
            s += f", num_heads={self.num_heads}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s + (", bidirectional=True" if self.bidirectional else "")
