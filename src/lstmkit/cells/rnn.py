"""Elman RNN: one time step forward and backward.

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)     (nonlinearity="tanh")
    h_t = relu(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)     (nonlinearity="relu")

The gradient reaching back k steps is dh_T/dh_t = prod diag(tanh'(a_s)) W_hh: it vanishes or
explodes geometrically, the problem the gated cells were built to solve.
"""

from __future__ import annotations

import torch

from .base import Cell, Grads, matmul_over_steps, tanh_backward
from .registry import register

GATES: tuple[str, ...] = ()
threshold_backward = torch.ops.aten.threshold_backward.grad_input


class RNNCellMath(Cell):
    gates = GATES
    family_id, compiled_kernel = 2, True
    h_products = "only"

    def __init__(self, hidden_size: int, nonlinearity: str = "tanh"):
        self.check_nonlinearity("RNNCellMath", nonlinearity)
        self.hidden_size, self.nonlinearity = hidden_size, nonlinearity
        self.state_sizes = (hidden_size,)

    @staticmethod
    def check_nonlinearity(name: str, nonlinearity) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"{name}: nonlinearity must be 'tanh' or 'relu', "
                             f"got {nonlinearity!r} (Unknown nonlinearity '{nonlinearity}'. "
                             "Select from 'tanh' or 'relu'.)")

    @property
    def num_gates(self) -> int:
        return 1                                              # the pre-activation a_t

    def spec(self):
        H = self.hidden_size
        return [2, H, H, 0, 0, 1, int(self.nonlinearity == "relu")]

    @classmethod
    def from_spec(cls, spec):
        return cls(spec[1], "relu" if spec[6] else "tanh")

    def reference_step(self, w, xw, prev):
        a = xw + prev[0].mm(w.w_hh.t())
        return (torch.tanh(a) if self.nonlinearity == "tanh" else torch.relu(a),)

    def forward_step(self, w, gates, prev, new, buf):
        (h_prev,), (h,), (gates,) = prev, new, gates
        gates.addmm_(h_prev, w.w_hh_t)                      # a_t (n, H)
        if self.nonlinearity == "tanh":
            torch.tanh(gates, out=h)
        else:
            torch.clamp_min(gates, 0, out=h)

    def backward_step(self, w, gates, prev, new, buf, dnew, dgates, gbuf, dprev):
        (h,), (dh,), (dh_prev,), (dgates,) = new, dnew, dprev, dgates
        if self.nonlinearity == "tanh":
            tanh_backward.grad_input(dh, h, grad_input=dgates)           # da = dh * (1 - h^2)
        else:
            threshold_backward(dh, h, 0, grad_input=dgates)   # da = dh * [h > 0]
        torch.mm(dgates, w.w_hh, out=dh_prev)

    def recurrent_grads(self, w, prev, new, bufs, dgates, dnew, gbufs):
        return Grads(w_hh=matmul_over_steps(dgates, prev[0]))


register("rnn", RNNCellMath, layer="RNN",
         summary="Elman RNN: h_t = tanh(W_ih x_t + W_hh h_{t-1} + b)")
