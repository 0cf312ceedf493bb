"""minGRU and minLSTM layers (Feng et al. 2024): torch.nn.GRU's arguments and shapes, gates from
the input only (``lstmkit.cells.minrnn`` has the equations and both forms of the recurrence).

Shapes as torch.nn names them: N batch, L sequence length, D = 2 if bidirectional else 1,
H_in input_size, H hidden_size.

    input    (L, N, H_in), (N, L, H_in) with batch_first, (L, H_in) unbatched, or a
             PackedSequence; ``lengths`` (N,) for a padded batch of variable lengths
    h_0, h_n (D * num_layers, N, H), or (D * num_layers, H) unbatched
    output   (L, N, D * H), (N, L, D * H) with batch_first, (L, D * H) unbatched, or a
             PackedSequence

Parameters per layer k and direction: ``weight_ih_l{k}{_reverse}`` (G * H, H_in of the layer)
with the gate blocks stacked, (W_z|W_h) for minGRU (G = 2), (W_f|W_i|W_h) for minLSTM (G = 3),
and ``bias_ih_l{k}{_reverse}`` (G * H,); there is no W_hh. All ~ U(-1/sqrt(H), 1/sqrt(H)) as
torch initialises its recurrent layers.

h_0 defaults to zeros, as torch.nn.GRU's does (the first step is then h_1 = b_1 = z_1 * h~_1);
any h_0 may be given, zero or negative values included. The paper's log-space code needs
h_0 > 0 and starts from g(0) = 0.5; pass ``torch.full((D * num_layers, N, H), 0.5)`` for that.

``mode``: "parallel" runs the chunkwise log-space scan (the paper's training form),
"sequential" the step loop in linear space; both have the same hand-written backward and agree
to rounding. On the CPU in float32 and float64 the step loop of each layer direction runs as one
fused C++ op forward and one backward (``lstmkit/engine/csrc/minrnn.cpp``, through
``lstmkit.cells.minrnn.recurrence``) when lstmkit's compiled extension is built, else in python.
"auto": on CPU the step loop, which benchmarks/bench_minrnn.py measured faster than the scan on
one thread (in python already: training about 1.5-2.5x, inference 2-5x, at T from 35 to 1024):
one core runs the loop at memory speed, while the scan's logcumsumexp costs ~60 ns per element.
Elsewhere (an accelerator, where the scan's work is parallel over T, as in the paper; not
measured here) the scan when L > 1.
``engine``: "compiled" runs the step loop in C++ (an error where it cannot: no extension, not
CPU float32/float64, mode "parallel"), "python" the loop in torch ops (the reference), "auto"
the C++ loop where it can run.
``step(x_t, h)`` advances a unidirectional layer by one time step for streaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import checks
from ..cells import minrnn
from ..trace import KeptSteps, SequenceTrace

MODES = ("auto", "parallel", "sequential")
ENGINES = ("auto", "python", "compiled")


class _MinRNN(nn.Module):
    """The body of minGRU and minLSTM; ``kind`` names the cell in ``lstmkit.cells.minrnn``."""

    kind: str

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 mode: str = "auto", engine: str = "auto", device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        input_size, hidden_size, num_layers, dropout, _ = checks.check_layer_args(
            name, input_size, hidden_size, num_layers, bias, batch_first, dropout, 0)
        checks.check_flags(name, bidirectional=bidirectional)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional = bidirectional
        self.mode = mode                                         # checked by the setter
        if engine not in ENGINES:
            raise ValueError(f"{name}: engine should be one of {ENGINES}, got {engine!r}")
        self.engine = engine
        G, H, D = minrnn.num_gates(self.kind), hidden_size, self.num_directions
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else D * H
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                self.register_parameter("weight_ih" + sfx,
                                        nn.Parameter(torch.empty(G * H, layer_in, **factory)))
                if bias:
                    self.register_parameter("bias_ih" + sfx,
                                            nn.Parameter(torch.empty(G * H, **factory)))
        self.reset_parameters()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"{type(self).__name__}: mode must be one of "
                             f"{', '.join(map(repr, MODES))}, got {mode!r}")
        self._mode = mode

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """The state's shape for a batch of ``batch`` sequences: [(D * num_layers, N, H)]."""
        return [(self.num_directions * self.num_layers, batch, self.hidden_size)]

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _weights(self, layer: int, direction: int) -> tuple[Tensor, Tensor | None]:
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        return getattr(self, "weight_ih" + sfx), getattr(self, "bias_ih" + sfx, None)

    def forward(self, input, state: Tensor | None = None,
                lengths=None) -> tuple[Tensor, Tensor]:
        """Returns (output, h_n); see the module docstring for the shapes.

        Variable lengths: a PackedSequence (output packed the same way), or a padded batch
        with ``lengths`` (N,), each in 1..L, any order; the output is zero past each length
        and h_n holds each sequence's state at its last step (for the reverse direction, at
        its first), as if each sequence ran alone.
        """
        name = type(self).__name__
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError(f"{name}: lengths is for a padded batch; a PackedSequence "
                                 "carries its own lengths")
            checks.check_input(name, input.data, self.input_size, False, packed=True)
            padded, lengths = pad_packed_sequence(input)         # (L, N, H_in), batch order
            output, h_n = self._forward(padded, state, lengths.to(padded.device), False)
            return pack_padded_sequence(output, lengths, enforce_sorted=False), h_n
        checks.check_input(name, input, self.input_size, self.batch_first, packed=False)
        unbatched = input.dim() == 2
        if lengths is not None:
            if unbatched:
                raise ValueError(f"{name}: lengths needs a batched 3-D input, got shape "
                                 f"{checks.shape_str(input.shape)}")
            lengths = self._check_lengths(input, lengths)
        x = input.unsqueeze(1) if unbatched else input
        if self.batch_first and not unbatched:
            x = x.transpose(0, 1)                                # (L, N, H_in)
        output, h_n = self._forward(x, state, lengths, unbatched)
        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n

    def _check_lengths(self, input: Tensor, lengths) -> Tensor:
        """lengths (N,) of a padded batch: integers in 1..L, any order; on the input's device."""
        name = type(self).__name__
        T = input.shape[1] if self.batch_first else input.shape[0]
        B = input.shape[0] if self.batch_first else input.shape[1]
        lengths = torch.as_tensor(lengths)
        if B == 0 and lengths.numel() == 0:
            return lengths.to(input.device, torch.int64).reshape(0)   # an empty batch, as []
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(f"{name}: expected integer lengths, got {lengths.dtype}")
        if lengths.shape != (B,):
            raise ValueError(f"{name}: expected lengths as {B} integers (one per sequence), "
                             f"got shape {checks.shape_str(lengths.shape)}")
        if B and not (lengths.min() >= 1 and lengths.max() <= T):
            raise ValueError(f"{name}: expected every length between 1 and the sequence length "
                             f"L={T}, got {lengths.tolist()}")
        return lengths.to(input.device, torch.int64)

    def trace(self, input: Tensor, state: Tensor | None = None, lengths=None) -> SequenceTrace:
        """``forward`` one python step at a time, keeping every step: a
        ``lstmkit.trace.SequenceTrace`` (output, h_n, steps) whose ``steps[layer][direction]``
        holds h_t (T, N, H), the gates (minGRU: z_t and the candidate h~_t = g(.), "g";
        minLSTM: the normalised f'_t, i'_t and "g") and after a backward pass of anything
        computed from ``output`` or ``h_n`` the gradient dL/dh_t BPTT carries (through
        h_t = a_t h_{t-1} + b_t). Batched time-major or batch_first input, ``lengths`` as
        ``forward`` takes them (every recorded value zero past each length)."""
        name = type(self).__name__
        if not isinstance(input, Tensor) or input.dim() != 3:
            got = f"shape {checks.shape_str(input.shape)}" if isinstance(input, Tensor) else \
                type(input).__name__
            raise ValueError(f"{name}: trace takes a batched 3-D input, got {got}")
        checks.check_input(name, input, self.input_size, self.batch_first, packed=False)
        if lengths is not None:
            lengths = self._check_lengths(input, lengths)
        x = input.transpose(0, 1) if self.batch_first else input
        steps: list = []
        output, h_n = self._forward(x, state, lengths, False, steps)
        return SequenceTrace(output.transpose(0, 1) if self.batch_first else output, h_n,
                             steps, h_n=h_n)

    def _forward(self, x: Tensor, state: Tensor | None, lengths: Tensor | None,
                 unbatched: bool, steps: list | None = None) -> tuple[Tensor, Tensor]:
        """The layers over time-major x (L, N, H_in): output (L, N, D*H), h_n (D*layers, N, H).
        ``steps``, a list, gets each layer's row of ``_MinStepTrace`` (``trace``)."""
        name = type(self).__name__
        w = self.weight_ih_l0
        if torch.is_autocast_enabled(x.device.type):
            # bfloat16 from a layer autocast ran before, or the state a call under autocast
            # returned: the products run in autocast's dtype anyway
            x = x.to(w.dtype)
            state = state if state is None else state.to(w.dtype)
        checks.check_dtype_matches(name, x, w)
        T, B = x.shape[0], x.shape[1]
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        if state is not None:
            shape = (LD, H) if unbatched else (LD, B, H)
            layout = "(num_layers * num_directions, H)" if unbatched else \
                "(num_layers * num_directions, N, H)"
            checks.check_state(name, "h_0", state, shape, x, layout, "hidden")
            state = state.unsqueeze(1) if unbatched else state
        parallel = self.mode == "parallel" or (self.mode == "auto" and T > 1
                                                and x.device.type != "cpu")
        compiled = {"auto": None, "python": False, "compiled": True}[self.engine]
        if compiled and parallel:
            raise ValueError(f"{name}: engine='compiled' runs the step loop; mode={self.mode!r} "
                             f"runs the log-space scan here (mode='sequential', or engine='auto')")
        t_index = torch.arange(T, device=x.device)[:, None]      # (L, 1)
        if lengths is None:
            reverse = lambda t: t.flip(0)                        # noqa: E731
            last = lambda h: h[-1]                               # noqa: E731
        else:
            # each sequence reversed within its length, the padding left after it: the reverse
            # direction starts at each sequence's end; applying it twice is the identity
            order = torch.where(t_index < lengths, lengths - 1 - t_index, t_index)[..., None]
            reverse = lambda t: t.gather(0, order.expand(-1, -1, t.shape[-1]))  # noqa: E731
            at_end = (lengths - 1)[None, :, None].expand(1, -1, H)
            last = lambda h: h.gather(0, at_end)[0]             # noqa: E731
            inside = (t_index < lengths)[..., None].to(x.dtype)  # (L, N, 1)
        kept_at = (None, None) if lengths is None else (order, inside > 0)   # for a trace

        layer_input, finals = x, []
        for layer in range(self.num_layers):
            outputs = []
            if steps is not None:
                steps.append([])
            for d in range(self.num_directions):
                weight, bias = self._weights(layer, d)
                x_d = reverse(layer_input) if d else layer_input
                pre = F.linear(x_d, weight, bias)               # (L, N, G*H)
                h0 = None if state is None else state[layer * self.num_directions + d]
                if steps is None:
                    reason = compiled and minrnn.compiled_unsupported(pre, h0)
                    if reason:
                        raise RuntimeError(f"{name}: engine='compiled', but {reason}")
                    h = minrnn.recurrence(self.kind, pre, h0, parallel,
                                          compiled=compiled)             # (L, N, H)
                else:
                    steps[layer].append(_MinStepTrace(self.kind, bool(d), *kept_at))
                    h = steps[layer][-1].run(pre, h0)
                finals.append(last(h))                           # (N, H), last processed step
                outputs.append(reverse(h) if d else h)
            layer_input = torch.cat(outputs, -1) if len(outputs) > 1 else outputs[0]
            if lengths is not None:
                layer_input = layer_input * inside               # zero past each length
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, torch.stack(finals)                  # (L, N, D*H), (D*layers, N, H)

    def step(self, input: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One time step for streaming: input (N, H_in) or (H_in,), state (num_layers, N, H) or
        (num_layers, H) (None for zeros); returns (output (N, H), h (num_layers, N, H)), equal to
        ``forward`` over the steps one at a time, carrying h."""
        name = type(self).__name__
        if self.bidirectional:
            raise ValueError(f"{name}: step runs one direction in time; a bidirectional layer "
                             "needs the whole sequence (call forward)")
        if not isinstance(input, Tensor) or input.dim() not in (1, 2):
            got = f"shape {checks.shape_str(input.shape)}" if isinstance(input, Tensor) else \
                type(input).__name__
            raise ValueError(f"{name}: step expects one time step of shape (N, H_in) or "
                             f"(H_in,), got {got}")
        x = input.unsqueeze(0)                                   # (1, N, H_in) or (1, H_in)
        if self.batch_first and x.dim() == 3:
            x = x.transpose(0, 1)
        output, h_n = self.forward(x, state)
        return (output[:, 0] if self.batch_first and x.dim() == 3 else output[0]), h_n

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for key, default in (("num_layers", 1), ("bias", True), ("batch_first", False),
                             ("dropout", 0.0), ("bidirectional", False), ("mode", "auto"),
                             ("engine", "auto")):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        return s


class minGRU(_MinRNN):  # noqa: N801  (the paper's name)
    """minGRU layer (Feng et al. 2024), with torch.nn.GRU's arguments and returns:

        z_t = sigma(W_z x_t + b_z)        h~_t = g(W_h x_t + b_h)
        h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

    g(x) = x + 0.5 for x >= 0, sigma(x) otherwise. ``weight_ih_l{k}`` = (W_z|W_h).
    """

    kind = "mingru"


class minLSTM(_MinRNN):  # noqa: N801  (the paper's name)
    """minLSTM layer (Feng et al. 2024), with torch.nn.GRU's arguments and returns (one state):

        f_t = sigma(W_f x_t + b_f)   i_t = sigma(W_i x_t + b_i)   h~_t = g(W_h x_t + b_h)
        f'_t = f_t / (f_t + i_t)     i'_t = i_t / (f_t + i_t)
        h_t = f'_t * h_{t-1} + i'_t * h~_t

    g(x) = x + 0.5 for x >= 0, sigma(x) otherwise. ``weight_ih_l{k}`` = (W_f|W_i|W_h).
    """

    kind = "minlstm"



class _MinStepTrace(KeptSteps):
    """One layer and direction of a minGRU or minLSTM trace (see ``_MinRNN.trace``)."""

    bounded = ("z", "f", "i")

    def __init__(self, kind: str, reverse: bool, order=None, valid=None):
        super().__init__(reverse, order, valid)
        self.kind = kind
        self.names = {"g": "candidate h~_t = g(W_h x_t + b_h)"} | (
            {"z": "update gate z_t"} if kind == "mingru" else
            {"f": "forget gate f'_t = f_t / (f_t + i_t)",
             "i": "input gate i'_t = i_t / (f_t + i_t)"})

    def run(self, pre: Tensor, h0: Tensor | None) -> Tensor:
        """h (L, N, H) from pre = W_ih x_t + b_ih (L, N, G*H), h_t = a_t h_{t-1} + b_t by the
        equations, differentiated by autograd."""
        a, b = minrnn.coefficients(self.kind, pre)
        h = torch.zeros_like(b[0]) if h0 is None else h0
        for t in range(pre.shape[0]):
            h = a[t] * h + b[t]
            self.keep(h)
        pre = pre.detach()
        candidate = minrnn.g(pre.chunk(minrnn.num_gates(self.kind), -1)[-1])
        self.kept_gates = ({"z": 1 - a.detach()} if self.kind == "mingru" else
                           {"f": a.detach(), "i": 1 - a.detach()})
        self.kept_gates["g"] = candidate
        return torch.stack(self.hs)
