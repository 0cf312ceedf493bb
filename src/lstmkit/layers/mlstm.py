"""mLSTM layers (xLSTM's matrix-memory LSTM, Beck et al. 2024, Section 2.3), stacked and
bidirectional like torch.nn.LSTM, over the three forms of ``lstmkit.cells.mlstm``.

Per layer and direction, per head (NH heads, head size d = H / NH), x_t the layer's input:

    q_t = W_q x_t + b_q,  k_t = (W_k x_t + b_k) / sqrt(d),  v_t = W_v x_t + b_v
    i~_t = w_i^T x_t + b_i,  f~_t = w_f^T x_t + b_f             (one scalar per head)
    o_t = sigmoid(W_o x_t + b_o)
    C_t = f_t C_{t-1} + i_t v_t k_t^T,  n_t = f_t n_{t-1} + i_t k_t
    h~_t = C_t q_t / max(|n_t^T q_t|, 1),  i_t = exp(i~_t),  f_t = sigmoid(f~_t) or exp(f~_t)
    h_t = o_t * GN(h~_t)        (head_norm=True, the default)     h_t = o_t * h~_t   (False)

GN normalises each head's d values of h~_t (zero mean, unit variance, eps 1e-5) and scales them
by a learned weight (xLSTM's head-wise group norm, the package's ``outnorm``): h~_t has no
bound (C_t q_t against n_t^T q_t), and without it a deep or wide mLSTM diverges in training.

There is no recurrent weight: h_{t-1} does not enter step t, which is what lets the parallel
and chunkwise forms exist. Shapes as torch.nn names them (N batch, L sequence length,
D = 2 if bidirectional else 1, H_in input_size, H hidden_size):

    input    (L, N, H_in), (N, L, H_in) with batch_first, or (L, H_in) unbatched
    output   (L, N, D * H), (N, L, D * H) with batch_first, or (L, D * H) unbatched
    state    (C, n, m): (D * num_layers, N, NH, d, d), (D * num_layers, N, NH, d),
             (D * num_layers, N, NH), without the N axis for an unbatched input; the stabilised
             states of the cell (C~, n~, m); the reverse direction's is the state at step 0

Parameters per layer k (``_reverse`` appended for the backward direction), H_k = H_in for
k = 0 else D * H: weight_q_l{k}, weight_k_l{k}, weight_v_l{k}, weight_o_l{k} (H, H_k);
weight_i_l{k}, weight_f_l{k} (NH, H_k); with bias the matching bias_*_l{k} (H,) or (NH,);
with head_norm weight_norm_l{k} (H,), initially ones.

Initialisation: W_q, W_k, W_v, W_o ~ U(-1/sqrt(H_k), 1/sqrt(H_k)) (nn.Linear's scale), their
biases 0; w_i, w_f ~ U(-0.1/sqrt(H_k), 0.1/sqrt(H_k)) (small: the gates start close to their
biases, as xLSTM's zero weights, but not exactly input-blind); b_i ~ N(0, 0.1); b_f such that
f = sigmoid(linspace(3, 6, NH)) per head (f~ = that linspace for the sigmoid forget gate, its
logsigmoid for the exp one), xLSTM's choice: long memory at the start.

engine: "compiled" runs the parallel form's forward and backward (training) and the recurrent
step (inference) in C++ (csrc/mlstm.cpp), "python" in torch ops (the hand-written backward of
``lstmkit.cells.mlstm``), "auto" the compiled engine where the extension is built and the
tensors are float32/float64 on the CPU, outside torch.compile / export / ONNX / torch.func.

mode: "parallel" (O(L^2) per head, fastest for short training sequences), "chunkwise" (O(L)),
"recurrent" (the step loop), "auto": the recurrent step for L == 1, parallel for
L <= AUTO_PARALLEL_MAX_T, chunkwise beyond (benchmarks/bench_mlstm.py).

Without autograd (torch.no_grad, inference_mode), float32/float64 on the CPU, the recurrent
mode (and auto on one step) runs the compiled step (lstmkit.engine.compiled, csrc/mlstm.cpp):
per step and layer one product and one call for every head and row; the python step where the
extension is not built. Large float32 projections run on oneDNN (``_project``).

lengths= (a right-padded batch): padded steps become identity steps (i~ = -inf, log f = 0), in
every mode; outputs there are zero, each final state the sequence's own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .. import checks
from ..cells import mlstm as cell
from ..engine import compiled
from ..trace import KeptSteps, SequenceTrace

MODES = ("auto", "parallel", "chunkwise", "recurrent")
ENGINES = ("auto", "python", "compiled")
# training steps, one thread, H = 256, 4 heads: parallel ahead up to T = 128, chunkwise from 192
AUTO_PARALLEL_MAX_T = 160
_PROJECTIONS = ("q", "k", "v", "i", "f", "o")


class mLSTM(nn.Module):  # noqa: N801 (the paper's name)
    """A stack of mLSTM layers; see the module docstring for equations, shapes and names."""

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """The shapes of (C, n, m) for a batch of ``batch`` sequences."""
        DL, NH, d = self.num_directions * self.num_layers, self.num_heads, self.head_size
        return [(DL, batch, NH, d, d), (DL, batch, NH, d), (DL, batch, NH)]

    def __init__(self, input_size: int, hidden_size: int, num_heads: int = 1, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, forget_gate: str = "sigmoid", mode: str = "auto",
                 chunk_size: int = 64, head_norm: bool = True, engine: str = "auto",
                 device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        input_size, hidden_size, num_layers, dropout, _ = checks.check_layer_args(
            name, input_size, hidden_size, num_layers, bias, batch_first, dropout, 0)
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"{name}: num_heads should be a positive int, got {num_heads!r}")
        if hidden_size % num_heads:
            raise ValueError(f"{name}: num_heads must divide hidden_size ({hidden_size}), got "
                             f"num_heads={num_heads}")
        if forget_gate not in cell.FORGET_GATES:
            raise ValueError(f"{name}: forget_gate should be one of {cell.FORGET_GATES}, got "
                             f"{forget_gate!r}")
        if mode not in MODES:
            raise ValueError(f"{name}: mode should be one of {MODES}, got {mode!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"{name}: chunk_size should be a positive int, got {chunk_size!r}")
        if engine not in ENGINES:
            raise ValueError(f"{name}: engine should be one of {ENGINES}, got {engine!r}")
        self.input_size, self.hidden_size, self.num_heads = input_size, hidden_size, num_heads
        self.num_layers, self.bias, self.batch_first = num_layers, bool(bias), batch_first
        self.dropout, self.bidirectional = dropout, bool(bidirectional)
        self.forget_gate, self.mode, self.chunk_size = forget_gate, mode, chunk_size
        self.head_size = hidden_size // num_heads
        self.head_norm = bool(head_norm)
        self.engine = engine

        factory = {"device": device, "dtype": dtype}
        H, NH, D = hidden_size, num_heads, self.num_directions
        self._param_names: list[dict[str, str]] = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else D * H
            for direction in range(D):
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                names = {}
                for p in _PROJECTIONS:
                    rows = NH if p in ("i", "f") else H
                    shapes = {f"weight_{p}": (rows, layer_in)}
                    if self.bias:
                        shapes[f"bias_{p}"] = (rows,)
                    for key, shape in shapes.items():
                        self.register_parameter(key + sfx,
                                                nn.Parameter(torch.empty(shape, **factory)))
                        names[key] = key + sfx
                if self.head_norm:
                    self.register_parameter("weight_norm" + sfx,
                                            nn.Parameter(torch.empty(H, **factory)))
                    names["weight_norm"] = "weight_norm" + sfx
                self._param_names.append(names)
        # each layer-direction's parameter names in the stacking order of ``_stacked``
        self._stack_order = [[names[f"{kind}_{p}"] for kind in ("weight", "bias")
                              for p in _PROJECTIONS if f"{kind}_{p}" in names]
                             for names in self._param_names]
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """The initialisation the module docstring describes."""
        for index, names in enumerate(self._param_names):
            layer_in = self.input_size if index < self.num_directions else \
                self.num_directions * self.hidden_size
            bound = 1.0 / math.sqrt(layer_in)
            with torch.no_grad():
                for p in _PROJECTIONS:
                    weight = getattr(self, names[f"weight_{p}"])
                    nn.init.uniform_(weight, -bound, bound)
                    if p in ("i", "f"):
                        weight.mul_(0.1)
                    if self.bias:
                        nn.init.zeros_(getattr(self, names[f"bias_{p}"]))
                if self.bias:
                    nn.init.normal_(getattr(self, names["bias_i"]), 0.0, 0.1)
                    b_f = torch.linspace(3.0, 6.0, self.num_heads, dtype=torch.float64)
                    if self.forget_gate == "exp":
                        b_f = F.logsigmoid(b_f)
                    getattr(self, names["bias_f"]).copy_(b_f)
                if self.head_norm:
                    nn.init.ones_(getattr(self, names["weight_norm"]))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_heads={self.num_heads}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for key, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                             ("bidirectional", False), ("forget_gate", "sigmoid"),
                             ("mode", "auto"), ("chunk_size", 64), ("head_norm", True),
                             ("engine", "auto")):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        return s

    # ------------------------------------------------------------------------------------------

    def forward(self, input: Tensor, state: tuple[Tensor, Tensor, Tensor] | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """(output, (C, n, m)); feed the state back for the next chunk of a long sequence.

        ``lengths`` (N,) for a right-padded batch (any order): the output is zero past each
        length and the final state is each sequence's after its own last step; the reverse
        direction reads each sequence from its own last step. Padded steps run as identity
        steps (i~ = -inf, log f = 0), so every mode takes them in the same one call."""
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input should be a Tensor, got {type(input).__name__}")
        if lengths is None and input.dim() in (2, 3) and input.shape[-1] == self.input_size \
                and input.shape[1 if self.batch_first and input.dim() == 3 else 0] == 1:
            kernel = self._step_kernel(input, 1)
            if kernel is not None:          # streaming inference: the short way
                return self._compiled_step(input, state, kernel)
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: expected input of 2 (unbatched) or 3 dimensions, got "
                             f"shape {tuple(input.shape)}")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else input.transpose(0, 1) if self.batch_first \
            else input                                                           # (L, N, H_in)
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input.size(-1) must be equal to input_size "
                             f"({self.input_size}), got {x.shape[-1]}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: expected a sequence of at least one step, got length 0")
        states = self._split_state(state, x.shape[1], unbatched)
        valid = reverse = None
        if lengths is not None:
            if unbatched:
                raise ValueError(f"{name}: lengths needs a batched 3-D input, got shape "
                                 f"{tuple(input.shape)}")
            valid, reverse = _padding(name, lengths, *x.shape[:2], x.device)
        D = self.num_directions
        kernel = self._step_kernel(x, x.shape[0])
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                index = layer * D + direction
                if not direction or x.shape[0] == 1:
                    seq = x
                else:               # each sequence from its own last step: padding stays last
                    seq = _in_reverse(x, reverse)
                h, final = self._layer(seq, index, states[index] if states else None, valid,
                                       kernel)
                if direction and x.shape[0] > 1:
                    h = _in_reverse(h, reverse)                               # its own inverse
                outputs.append(h)
                finals.append(final)
            x = torch.cat(outputs, -1) if D == 2 else outputs[0]                  # (L, N, D*H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        C, n, m = (torch.stack(parts) for parts in zip(*finals)) if len(finals) > 1 else \
            (t.unsqueeze(0) for t in finals[0])
        if unbatched:
            return x.squeeze(1), (C.squeeze(1), n.squeeze(1), m.squeeze(1))
        return (x.transpose(0, 1) if self.batch_first else x), (C, n, m)

    def _step_kernel(self, x: Tensor, L: int):
        """The compiled step (csrc/mlstm.cpp) where this call of L steps runs the recurrent form
        without autograd (under torch.no_grad or inference_mode) on float32/float64 CPU tensors
        and the extension is built; else None (the python step)."""
        if torch.is_grad_enabled() or not self._compiles(x):
            return None
        if self.mode != "recurrent" and not (self.mode == "auto" and L == 1):
            return None
        return compiled.mlstm_step_kernel()[1]

    def _compiles(self, x: Tensor) -> bool:
        """Whether this call runs the compiled engine: engine "compiled", or "auto" where the
        extension is built, on float32/float64 CPU tensors, outside torch's tracers (to which
        the extension is opaque); engine "compiled" where it cannot is an error."""
        if self.engine == "python" or _tracing():
            return False
        if compiled.mlstm_step_kernel() is None:
            if self.engine == "compiled":
                raise RuntimeError(f"{type(self).__name__}: engine='compiled', but the compiled "
                                   f"engine is unavailable ({compiled.build_error()})")
            return False
        if x.device.type != "cpu" or x.dtype not in compiled.DTYPES \
                or torch.is_autocast_enabled("cpu"):
            if self.engine == "compiled":
                where = " under autocast" if torch.is_autocast_enabled("cpu") else ""
                raise RuntimeError(f"{type(self).__name__}: engine='compiled' runs float32 and "
                                   f"float64 CPU tensors outside autocast, got {x.dtype} on "
                                   f"{x.device}{where}")
            return False
        return True

    def _compiled_step(self, input: Tensor, state, kernel) -> tuple[Tensor, tuple]:
        """``forward`` for one step without lengths, every layer and direction one product and
        one compiled call: no time axis to move, no state split or stacked for one layer."""
        unbatched = input.dim() == 2
        N = 1 if unbatched else input.shape[0 if self.batch_first else 1]
        x = input.reshape(N, self.input_size)            # (N, H_in), whatever the layout
        D, NH, H = self.num_directions, self.num_heads, self.hidden_size
        DL = D * self.num_layers
        if state is None:
            states = [(None, None, None)] * DL
        elif DL == 1:                   # the kernel reads (1, N, NH, ...) as (N, NH, ...)
            self._check_state(state, N, unbatched)
            states = [state]
        else:
            states = self._split_state(state, N, unbatched)
        exp_gate = self.forget_gate == "exp"
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):              # one step: the reverse reads the same
                index = layer * D + direction
                weight_t, bias = self._step_weights(index)
                projected = x @ weight_t if bias is None else torch.addmm(bias, x, weight_t)
                projected, o = self._gate_later(projected)
                h, C, n, m = kernel(projected, *states[index], NH, exp_gate, 0.0)
                # h = sigma(o) * h~ (N, NH, d); the state (1, N, NH, ...)
                outputs.append(self._output(h, o, index).view(N, H))
                finals.append((C, n, m))
            x = torch.cat(outputs, -1) if D == 2 else outputs[0]                # (N, D * H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        final = finals[0] if DL == 1 else tuple(torch.cat(parts) for parts in zip(*finals))
        if unbatched:
            final = tuple(t.squeeze(1) for t in final)
        return x.view(*input.shape[:-1], D * H), final

    def _layer(self, x: Tensor, index: int, state, valid: Tensor | None = None, kernel=None
               ) -> tuple[Tensor, tuple]:
        """One layer and direction over x (L, N, H_k): (h (L, N, H), final state (N, NH, ...)).
        valid (L, N, 1) bool, False at padded steps (all at the end). kernel: the compiled
        layer step (``_step_kernel``), one call per step on the projection, or None."""
        L, N = x.shape[:2]
        H, NH = self.hidden_size, self.num_heads
        if kernel is not None and L == 1:                 # streaming: one product, one call
            C, n, m = state if state is not None else (None, None, None)
            projected, o = self._gate_later(F.linear(x[0], *self._stacked(index)))
            h, C, n, m = kernel(projected, C, n, m, NH, self.forget_gate == "exp", 0.0)
            h = self._output(h, o, index).view(1, N, H)   # h = sigma(o) * h~ (N, NH, d) in
            # the kernel; with head_norm it gave h~ and the gate comes after the norm
            return (h if valid is None else h.masked_fill(~valid, 0.0)), (C[0], n[0], m[0])
        projected = _project(x, *self._stacked(index))                    # (L, N, 4 H + 2 NH)
        if kernel is None:
            q, k, v, i_pre, f_pre, o = self._split(projected, valid)
        else:
            if valid is not None:           # identity steps, as below (no autograd here)
                projected[..., 3 * H:3 * H + NH].masked_fill_(~valid, -math.inf)
                projected[..., 3 * H + NH:3 * H + 2 * NH].masked_fill_(
                    ~valid, math.inf if self.forget_gate == "sigmoid" else 0.0)
            C, n, m = state if state is not None else (None, None, None)
            projected, o = self._gate_later(projected)
            hs = []
            for t in range(L):
                h, C, n, m = kernel(projected[t], C, n, m, NH, self.forget_gate == "exp", 0.0)
                hs.append(h)
            h = self._output(torch.stack(hs), o, index).view(L, N, H)
            return (h if valid is None else h.masked_fill(~valid, 0.0)), (C[0], n[0], m[0])
        kw = {"forget_gate": self.forget_gate}
        kernels = compiled.mlstm_parallel_kernel() if self._compiles(q) else None
        mode = self.mode
        if mode == "auto":
            mode = "recurrent" if L == 1 else "parallel" if L <= AUTO_PARALLEL_MAX_T \
                else "chunkwise"
        if mode == "recurrent" and L == 1:
            h, final = cell.step(q[..., 0, :], k[..., 0, :], v[..., 0, :], i_pre[..., 0],
                                 f_pre[..., 0], state, **kw)
            h = h.unsqueeze(-2)
        elif mode == "recurrent":
            h, final = cell.recurrent(q, k, v, i_pre, f_pre, state, **kw)
        elif mode == "parallel":
            h, final = cell.parallel(q, k, v, i_pre, f_pre, state, kernels=kernels, **kw)
        else:
            h, final = cell.chunkwise(q, k, v, i_pre, f_pre, state, chunk_size=self.chunk_size,
                                      kernels=kernels,
                                      **kw)
        h = h.permute(2, 0, 1, 3)                                               # (L, N, NH, d)
        if self.head_norm:
            h = self._group_norm(h, index)
        h = torch.sigmoid(o) * h.reshape(L, N, H)
        return (h if valid is None else h.masked_fill(~valid, 0.0)), final

    def _group_norm(self, h: Tensor, index: int) -> Tensor:
        """GN(h~): each head's d values (..., NH, d) normalised, times the learned weight."""
        weight = self._parameters[self._param_names[index]["weight_norm"]]
        return F.layer_norm(h, (self.head_size,), eps=1e-5) * weight.view(self.num_heads, -1)

    def _gate_later(self, projected: Tensor) -> tuple[Tensor, Tensor | None]:
        """For the compiled step, which applies sigma(o~) itself: with head_norm the gate comes
        after the norm, so the kernel gets o~ = +inf (sigma = 1, h~ out) and o~ is kept."""
        if not self.head_norm:
            return projected, None
        H, NH = self.hidden_size, self.num_heads
        o = projected[..., 3 * H + 2 * NH:].clone()
        projected = projected.clone()
        projected[..., 3 * H + 2 * NH:] = math.inf
        return projected, o

    def _output(self, h: Tensor, o: Tensor | None, index: int) -> Tensor:
        """The compiled step's h (..., NH, d) as the layer's output: as it is without
        head_norm, else sigma(o~) * GN(h~)."""
        if o is None:
            return h
        return torch.sigmoid(o) * self._group_norm(h, index).reshape(o.shape)

    def _split(self, projected: Tensor, valid: Tensor | None = None) -> tuple[Tensor, ...]:
        """The projection (L, N, 4 H + 2 NH) as q, k (scaled by 1/sqrt(d)), v (N, NH, L, d),
        i~, f~ (N, NH, L) and o~ (L, N, H); padded steps (valid False) made identity steps."""
        L, N = projected.shape[:2]
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        qkv, i_pre, f_pre, o = projected.split([3 * H, NH, NH, H], -1)
        # one copy into (N, NH, L, d) for all three, which every product then reads as it is
        q, k, v = qkv.reshape(L, N, 3, NH, d).permute(2, 1, 3, 0, 4).contiguous().unbind(0)
        k = k * (1.0 / math.sqrt(d))
        if valid is not None:           # identity steps: nothing written, nothing decays
            i_pre = i_pre.masked_fill(~valid, -math.inf)
            f_pre = f_pre.masked_fill(~valid, math.inf if self.forget_gate == "sigmoid" else 0.0)
        return q, k, v, i_pre.permute(1, 2, 0), f_pre.permute(1, 2, 0), o        # (N, NH, L)

    def trace(self, input: Tensor, state=None, lengths: Tensor | None = None) -> SequenceTrace:
        """``forward`` in the recurrent form, one python step at a time, keeping every step:
        a ``lstmkit.trace.SequenceTrace`` whose ``steps[layer][direction]`` holds the gates
        i'_t, f'_t (stabilised, (T, N, NH)) and o_t (T, N, H), the states C~_t
        (T, N, NH, d, d), n~_t (T, N, NH, d), m_t (T, N, NH), h_t (T, N, H), and after a
        backward pass of anything computed from ``output`` the gradients dL/dh_t (from the
        output only: no h feeds the next step) and dL/dC~_t, dL/dn~_t (what BPTT carries
        through the memory). Batched time-major or batch_first input, ``lengths`` as
        ``forward`` takes them (every recorded value zero past each length); the same output
        and state as ``forward`` (float rounding apart)."""
        name = type(self).__name__
        if not isinstance(input, Tensor) or input.dim() != 3:
            raise ValueError(f"{name}: trace takes a batched 3-D input, got "
                             f"{tuple(input.shape) if isinstance(input, Tensor) else input}")
        x = input.transpose(0, 1) if self.batch_first else input               # (L, N, H_in)
        if x.shape[-1] != self.input_size or x.shape[0] == 0:
            raise ValueError(f"{name}: expected input (L >= 1, N, {self.input_size}), got "
                             f"{tuple(input.shape)}")
        states = self._split_state(state, x.shape[1], False)
        valid = order = None
        if lengths is not None:
            valid, order = _padding(name, lengths, *x.shape[:2], x.device)
        D, steps, finals = self.num_directions, [], []
        for layer in range(self.num_layers):
            outputs, row = [], []
            for direction in range(D):
                index = layer * D + direction
                seq = _in_reverse(x, order) if direction else x
                q, k, v, i_pre, f_pre, o = self._split(_project(seq, *self._stacked(index)),
                                                       valid)
                st = _MLSTMStepTrace(self, direction == 1, index, order, valid)
                h, final = st.run(q, k, v, i_pre, f_pre, o, states[index] if states else None)
                if valid is not None:
                    h = h.masked_fill(~valid, 0.0)
                if direction:
                    h = _in_reverse(h, order)
                outputs.append(h)
                finals.append(final)
                row.append(st)
            steps.append(row)
            x = torch.cat(outputs, -1) if D == 2 else outputs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        C, n, m = (torch.stack(parts) for parts in zip(*finals))
        return SequenceTrace(x.transpose(0, 1) if self.batch_first else x, (C, n, m), steps)

    def _stacked(self, index: int) -> tuple[Tensor, Tensor | None]:
        """(W_q|W_k|W_v|w_i|w_f|W_o) and the biases alike, for one product per layer. Outside
        autograd the stack is kept while no parameter changed (by identity and version), so a
        step of streaming inference does not copy every weight."""
        own = self._parameters                                     # not nn.Module.__getattr__
        params = [own[key] for key in self._stack_order[index]]
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return self._stack(params)
        versions = [p._version for p in params]
        cache = self.__dict__.setdefault("_stack_cache", {})
        held = cache.get(index)             # holds the parameters: their ids stay theirs
        if held is None or held[2] != versions or any(a is not b for a, b in zip(held[1],
                                                                                  params)):
            with torch.no_grad():
                cache[index] = held = (self._stack(params), params, versions)
        return held[0]

    def _step_weights(self, index: int) -> tuple[Tensor, Tensor | None]:
        """(the stack transposed, contiguous (H_k, 4 H + 2 NH), the biases) for a step's
        addmm (one row times it: 12 us against F.linear's 15 at 256 x 1032), kept beside the
        stack outside autograd."""
        weight, bias = self._stacked(index)
        held = self._stack_cache[index]
        if len(held) == 3:
            self._stack_cache[index] = held = (*held, weight.t().contiguous())
        return held[3], bias

    def _stack(self, params: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        n = len(_PROJECTIONS)
        return torch.cat(params[:n]), torch.cat(params[n:]) if self.bias else None

    def _split_state(self, state, N: int, unbatched: bool) -> list | None:
        """The state as one (C, n, m) per layer and direction, each (N, NH, ...), checked."""
        if state is None:
            return None
        self._check_state(state, N, unbatched)
        if unbatched:
            state = tuple(t.unsqueeze(1) for t in state)
        return list(zip(*(t.unbind(0) for t in state)))

    def _check_state(self, state, N: int, unbatched: bool) -> None:
        name = type(self).__name__
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            got = f"{len(state)} tensors" if isinstance(state, (tuple, list)) else \
                type(state).__name__
            raise ValueError(f"{name}: state should be a tuple (C, n, m) of three tensors, got "
                             f"{got}")
        DL, NH, d = self.num_directions * self.num_layers, self.num_heads, self.head_size
        batch = () if unbatched else (N,)
        shapes = ((DL, *batch, NH, d, d), (DL, *batch, NH, d), (DL, *batch, NH))
        for key, tensor, shape in zip("Cnm", state, shapes):
            if not isinstance(tensor, Tensor):
                raise TypeError(f"{name}: state's {key} should be a Tensor, got "
                                f"{type(tensor).__name__}")
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name}: expected state's {key} of shape {shape}, got "
                                 f"{tuple(tensor.shape)}")


class _MLSTMStepTrace(KeptSteps):
    """One layer and direction of an mLSTM trace (see ``mLSTM.trace``)."""

    names = {"n": "normaliser n~_t (per unit of its head)",
             "m": "stabiliser m_t (one per head)",
             "i": "input gate i'_t = exp(i~_t - m_t) (one per head)",
             "f": "forget gate f'_t (stabilised, one per head)", "o": "output gate o_t"}
    bounded = ("i", "f", "o")

    def __init__(self, layer: mLSTM, reverse: bool, index: int, order=None, valid=None):
        super().__init__(reverse, order, valid)
        self._forget_gate = layer.forget_gate
        self._norm = (lambda h: layer._group_norm(h, index)) if layer.head_norm else None
        self._H = layer.hidden_size

    def run(self, q, k, v, i_pre, f_pre, o, state):
        """The steps: h (L, N, H) = sigma(o~) * h~ and the final state."""
        L, N = o.shape[:2]
        m_prev = None if state is None else state[2]
        i, f, m_all = [], [], []
        for t in range(L):
            h, state = cell.step(q[..., t, :], k[..., t, :], v[..., t, :], i_pre[..., t],
                                 f_pre[..., t], state, forget_gate=self._forget_gate)
            C, n, m = state
            h = h if self._norm is None else self._norm(h)
            h = torch.sigmoid(o[t]) * h.reshape(N, self._H)
            self.keep(h, C=C, n=n)
            i.append(torch.exp(i_pre[..., t] - m).detach())
            f.append(torch.zeros_like(m).detach() if m_prev is None else torch.exp(
                cell.log_forget(f_pre[..., t], self._forget_gate) + m_prev - m).detach())
            m_all.append(m.detach())
            m_prev = m
        self.kept_gates = {"i": torch.stack(i), "f": torch.stack(f),
                           "o": torch.sigmoid(o.detach())}
        self.kept_states = {"m": torch.stack(m_all)}
        return torch.stack(self.hs), state


def _tracing() -> bool:
    """torch.compile, torch.export, ONNX or TorchScript tracing, torch.func transforms: plain
    torch operators only (the compiled step and the oneDNN projection are opaque to them)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or \
        torch.onnx.is_in_onnx_export() or cell.transformed()


# ------------------------------------------------------------------ the input projection

def _onednn_ops():
    """oneDNN's prepacked inner product (torch.ops.mkldnn, what torch.compile uses for linear
    layers on the CPU), or None where this torch has none."""
    try:
        ops = torch.ops.mkldnn
        pack, linear = ops._reorder_linear_weight, ops._linear_pointwise
    except (AttributeError, RuntimeError):
        return None
    return (pack, linear) if torch.backends.mkldnn.is_available() else None


_ONEDNN = _onednn_ops()
# float32 products from this many multiply-adds on oneDNN: one thread, it ran the layer's
# projection at 113-122 GMAC/s (weights packed per call) against 54-55 for F.linear (MKL) at
# (700 | 2048 | 3200) x (256 | 512) x (1032 | 2056); below, packing costs more than it saves
ONEDNN_MIN_MACS = 1 << 22


def _project(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """F.linear(x, weight, bias) for x (L, N, H_k), on oneDNN for large float32 CPU calls
    (outside autocast and tracing)."""
    L, N, K = x.shape
    if (_ONEDNN is None or x.dtype != torch.float32 or x.device.type != "cpu"
            or L * N * K * weight.shape[0] < ONEDNN_MIN_MACS or _tracing()
            or torch.is_autocast_enabled("cpu")):                  # autocast's own products
        return F.linear(x, weight, bias)
    return _OneDNNLinear.apply(x.reshape(L * N, K), weight, bias).view(L, N, -1)


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b, x (M, K), W (N_out, K); the backward's products on oneDNN too:
    dx = dy W, dW = dy^T x (x^T packed as the weight), db = sum_rows dy."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        pack, linear = _ONEDNN
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear(x, pack(weight, x.shape[0]), bias, "none", [], "")

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        pack, linear = _ONEDNN
        x, weight = ctx.saved_tensors
        dy = dy.contiguous()
        dx = dW = db = None
        if ctx.needs_input_grad[0]:
            dx = linear(dy, pack(weight.t().contiguous(), dy.shape[0]), None, "none", [], "")
        if ctx.needs_input_grad[1]:
            dW = linear(dy.t(), pack(x.t().contiguous(), dy.shape[1]), None, "none", [], "")
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum(0)
        return dx, dW, db


def _in_reverse(x: Tensor, order: Tensor | None) -> Tensor:
    """x (L, N, F) read backwards in time: each sequence from its own last step by ``order``
    (``_padding``'s, padding left last), or all flipped (no lengths). Its own inverse."""
    return x.flip(0) if order is None else x.gather(0, order.expand(-1, -1, x.shape[-1]))


def _padding(name: str, lengths, L: int, N: int, device) -> tuple[Tensor, Tensor]:
    """From lengths (N,): valid (L, N, 1), True at each sequence's own steps, and the time index
    (L, N, 1) that reverses each sequence within its length and leaves its padding in place."""
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"{name}: expected integer lengths, got {lengths.dtype}")
    if tuple(lengths.shape) != (N,):
        raise ValueError(f"{name}: expected lengths of shape ({N},) (one per sequence), got "
                         f"{tuple(lengths.shape)}")
    lengths = lengths.to(device, torch.int64)
    if N and (lengths.min() < 1 or lengths.max() > L):
        raise ValueError(f"{name}: expected every length between 1 and the sequence length "
                         f"L={L}, got {lengths.tolist()}")
    t = torch.arange(L, device=device)[:, None]                                      # (L, 1)
    valid = t < lengths                                                              # (L, N)
    reverse = torch.where(valid, lengths - 1 - t, t)
    return valid[..., None], reverse[..., None]
