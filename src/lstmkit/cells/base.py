"""What every cell family gives the engine: one time step forward, the same step backward.

The engine (``lstmkit.engine.sequence``) owns time: it projects the inputs of all steps at once
(``xw_t = W_ih x_t + b``), walks the steps, keeps the state histories and turns the per-step
pre-activation gradients into weight gradients. A cell owns the equations of one step and knows
its gate names; the engine knows none of them.

Shapes inside a step: n active sequences (a prefix of the batch), H hidden units, P = size of
h_t (H, or proj_size for a projected LSTM), G gate blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def transformed() -> bool:
    """Inside a torch.func transform (vmap, grad, jacrev, jvp, ...): a hand-written backward
    (a torch.autograd.Function without setup_context) and out= products cannot run there;
    plain torch ops differentiated by autograd can."""
    return bool(torch._C._functorch.get_interpreter_stack())

sigmoid_backward = torch.ops.aten.sigmoid_backward        # (grad, y) -> grad * y * (1 - y)
tanh_backward = torch.ops.aten.tanh_backward              # (grad, y) -> grad * (1 - y^2)


def sigmoid_backward_(grad: Tensor, y: Tensor) -> Tensor:
    """grad <- grad * y * (1 - y), in place, for y = sigma(a)."""
    return sigmoid_backward.grad_input(grad, y, grad_input=grad)


def tanh_backward_(grad: Tensor, y: Tensor) -> Tensor:
    """grad <- grad * (1 - y^2), in place, for y = tanh(a)."""
    return tanh_backward.grad_input(grad, y, grad_input=grad)


@dataclass
class Weights:
    """One layer-direction's parameters, in torch's layout (``None`` where absent).

    w_ih (G*H, I), w_hh (G*H, P), b_ih / b_hh (G*H,), w_ch (the cell's vectors end to end:
    peepholes (k*H,), or a cell's ``extra_params`` in their order), w_hr (P, H), w_hh_t (P, G*H).
    """

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None = None
    b_hh: Tensor | None = None
    w_ch: Tensor | None = None
    w_hr: Tensor | None = None
    w_hh_t: Tensor | None = None        # set by Cell.prepare


@dataclass
class Grads:
    w_hh: Tensor | None = None
    b_ih: Tensor | None = None          # None: d b_ih is the sum of dL/d(W_ih x_t + b) (the usual)
    b_hh: Tensor | None = None
    w_ch: Tensor | None = None
    w_hr: Tensor | None = None


class Cell:
    """Interface of a cell family. Subclasses set the class attributes and the four methods.

    ``state_sizes``: sizes of the carried states, h first (``(P, H)`` for LSTM: h_t, c_t).
    ``step_buffers``: widths of extra per-step tensors the forward keeps for the backward.
    ``grad_buffers``: widths of extra per-step tensors the backward keeps for weight gradients.
    """

    gates: tuple[str, ...] = ()
    # gates with values outside [0, 1] (the report reads saturation of the others), and names
    # the report gives gates or states whose letter means another thing in another cell
    tanh_gates: tuple[str, ...] = ("g", "n")    # LSTM candidate g_t, GRU new state n_t
    trace_names: dict[str, str] = {}
    hidden_size: int
    state_sizes: tuple[int, ...]
    state_names: tuple[str, ...] = ("h",)       # ("h", "c") for a cell with a cell state
    # peephole vectors of H entries each (weight_ch holds them end to end)
    peephole_vectors: int = 0
    # spec()[0]; the registry numbers a new cell (lstmkit.cells.registry)
    family_id: int | None = None
    # the compiled engine has this cell's steps (csrc/<cell>.cpp); else the python engine runs it
    compiled_kernel: bool = False
    step_buffers: tuple[int, ...] = ()
    grad_buffers: tuple[int, ...] = ()
    # True when W_hh h + b_hh enters every pre-activation additively, so b_hh joins the hoisted
    # input projection and d b_hh = d b_ih.
    bias_hh_hoisted: bool = True
    # Where h_{t-1} meets W_hh, for recurrent dropout (lstmkit.engine.sequence.Masks): "only"
    # (h_{t-1} enters the step only through its products; the engine masks it), "slot" (the
    # step reads the products' h from prev[-1] and adds their gradient into dprev[-1]), None
    # (recurrent dropout is refused for this cell).
    h_products: str | None = None

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    def weight_hh_shape(self) -> tuple[int, int]:
        """Shape of W_hh as a layer stores it: torch's (G*H, P); a cell with a structured
        recurrence keeps only its free entries (sLSTM's head-wise blocks: (4H, H / heads))."""
        return (self.num_gates * self.hidden_size, self.state_sizes[0])

    def extra_params(self) -> dict[str, tuple[int, float | None]]:
        """Vectors this cell has besides torch's weights: name -> (length, initial value, or None
        for torch's U(-1/sqrt(H), 1/sqrt(H))). A layer registers each as ``{name}_l{k}`` and hands
        them to the steps end to end as ``Weights.w_ch``; ``recurrent_grads`` returns their
        gradient the same way (``Grads.w_ch``)."""
        return {}

    def hoisted_bias(self, w: Weights) -> Tensor | None:
        """The bias added to W_ih x_t for every step at once."""
        if w.b_ih is None:
            return None
        return w.b_ih + w.b_hh if self.bias_hh_hoisted else w.b_ih

    def blocks(self, t: Tensor) -> tuple[Tensor, ...]:
        """The views of a (..., G*H) gate tensor that the steps receive as ``gates`` and
        ``dgates`` (made once per sequence: slicing at every step costs time)."""
        return (t,)

    def prepare(self, w: Weights, forward: bool) -> None:
        """Derive, once per sequence, what the steps use from the weights."""
        if forward:
            w.w_hh_t = w.w_hh.t().contiguous()      # (P, G*H): the faster layout for h W_hh^T

    def forward_step(self, w, gates, prev, new, buf) -> None:
        """gates: ``blocks`` of the (n, G*H) tensor holding W_ih x_t + b on entry; the step
        leaves the activated gates there. prev: states at t-1; new: where to write the states
        at t; buf: this step's step_buffers."""
        raise NotImplementedError

    def backward_step(self, w, gates, prev, new, buf, dnew, dgates, gbuf, dprev) -> None:
        """dnew: dL/d(states at t), h entry total, c entry (if any) carrying only what came from
        outside h_t; the step completes it to the total in place. Writes dL/d(pre-activations)
        into dgates (``blocks`` of an (n, G*H) tensor), extra gradients into gbuf, and
        dL/d(states at t-1) into dprev."""
        raise NotImplementedError

    def spec(self) -> list[int]:
        """The cell as seven ints, how the operators and the C++ engine name it: family (0 LSTM,
        1 GRU, 2 RNN, a registered cell's number), H, P, then four options (LSTM: peephole,
        coupled; GRU: reset_after; RNN: relu); ``from_spec`` inverts. A cell without options
        keeps this default."""
        H = self.hidden_size
        return [self.family_id, H, H, 0, 0, 0, 0]

    @classmethod
    def from_spec(cls, spec: list[int]) -> Cell:
        return cls(spec[1])

    def gate_values(self, gates: dict[str, Tensor]) -> dict[str, Tensor]:
        """The gates a trace shows, from the stored ones (a cell whose gate is derived from
        another, such as the coupled LSTM's i_t = 1 - f_t, adds it here)."""
        return gates

    def reference_step(self, w: Weights, xw: Tensor, prev: tuple) -> tuple:
        """The same step in plain differentiable torch ops, no buffers, nothing in place: xw
        (n, G*H) = W_ih x_t + ``hoisted_bias``, prev the states at t-1; returns the states at t.
        What second-order autograd differentiates (``lstmkit.engine.reference``)."""
        raise NotImplementedError

    def recurrent_grads(self, w, prev, new, bufs, dgates, dnew, gbufs) -> Grads:
        """Gradients of w_hh (and b_ih, b_hh, w_ch, w_hr where the cell has them) from
        whole-sequence tensors in processing order, as the steps saw them: prev[k] (T, B, size_k)
        the states entering each step (with the masked h where recurrent dropout acts), new[k]
        the states each step computed (before zoneout), dnew[k] dL/d(new[k]), bufs,
        dgates (T, B, G*H), gbufs."""
        raise NotImplementedError


def matmul_over_steps(a: Tensor, b: Tensor) -> Tensor:
    """sum_t a_t^T b_t for a (T, B, M) and b (T, B, N): one (M, N) product over all steps."""
    return a.reshape(-1, a.shape[-1]).t().mm(b.reshape(-1, b.shape[-1]))
