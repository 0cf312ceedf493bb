"""GRU: one time step forward and backward, in both placements of the reset gate.

    r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)           reset gate
    z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)           update gate
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))    reset_after=True (torch's form)
    n_t = tanh(W_in x_t + b_in + W_hn (r_t * h_{t-1}) + b_hn)    reset_after=False (Cho et al. 2014)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Gate layout of W_ih, W_hh, b_ih, b_hh as torch's: (W_r|W_z|W_n).
"""

from __future__ import annotations

import torch

from .base import Cell, Grads, matmul_over_steps, sigmoid_backward_, tanh_backward_
from .registry import register

GATES = ("r", "z", "n")


class GRUCellMath(Cell):
    gates = GATES
    family_id, compiled_kernel = 1, True
    h_products = "slot"         # h_{t-1} also enters z_t * h_{t-1}, unmasked

    def __init__(self, hidden_size: int, reset_after: bool = True):
        self.hidden_size, self.reset_after = hidden_size, reset_after
        self.state_sizes = (hidden_size,)
        H = hidden_size
        # reset_after: W_hh h_{t-1} + b_hh, and its gradient; else r_t * h_{t-1}
        self.step_buffers = (3 * H,) if reset_after else (H,)
        self.grad_buffers = (3 * H,) if reset_after else ()
        self.bias_hh_hoisted = not reset_after

    def spec(self):
        H = self.hidden_size
        return [1, H, H, 0, 0, int(self.reset_after), 0]

    @classmethod
    def from_spec(cls, spec):
        return cls(spec[1], bool(spec[5]))

    def reference_step(self, w, xw, prev):
        h_prev, h_in, H = prev[0], prev[-1], self.hidden_size    # h_in: what W_hh sees
        x_r, x_z, x_n = xw.split(H, -1)
        if self.reset_after:
            hw = h_in.mm(w.w_hh.t()) if w.b_hh is None else torch.addmm(w.b_hh, h_in,
                                                                          w.w_hh.t())
            h_r, h_z, h_n = hw.split(H, -1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
        else:
            h_rz = h_in.mm(w.w_hh[: 2 * H].t())
            r, z = torch.sigmoid(x_r + h_rz[:, :H]), torch.sigmoid(x_z + h_rz[:, H:])
            n = torch.tanh(x_n + (r * h_in).mm(w.w_hh[2 * H :].t()))
        return ((1 - z) * n + z * h_prev,)

    def blocks(self, t):
        """(all, r|z, r, z, n) views of a (..., 3H) gate tensor."""
        return (t, t[..., : 2 * self.hidden_size], *t.split(self.hidden_size, -1))

    def forward_step(self, w, gates, prev, new, buf):
        h_prev, h_in, (h,) = prev[0], prev[-1], new
        H = self.hidden_size
        _, rz, r, z, n = gates
        if self.reset_after:
            hw = buf[0]                                           # W_hh h_prev + b_hh (n, 3H)
            if w.b_hh is None:
                torch.mm(h_in, w.w_hh_t, out=hw)
            else:
                torch.addmm(w.b_hh, h_in, w.w_hh_t, out=hw)
            rz.add_(hw[:, : 2 * H]).sigmoid_()
            n.addcmul_(r, hw[:, 2 * H :]).tanh_()
        else:
            rh = buf[0]
            rz.addmm_(h_in, w.w_hh_t[:, : 2 * H]).sigmoid_()
            torch.mul(r, h_in, out=rh)
            n.addmm_(rh, w.w_hh_t[:, 2 * H :]).tanh_()
        torch.sub(h_prev, n, out=h)                               # h = n + z * (h_prev - n)
        h.mul_(z).add_(n)

    def backward_step(self, w, gates, prev, new, buf, dnew, dgates, gbuf, dprev):
        h_prev, h_in, (dh,) = prev[0], prev[-1], dnew
        dh_prev, dh_in = dprev[0], dprev[-1]      # the same tensor without recurrent dropout
        H = self.hidden_size
        _, rz, r, z, n = gates
        _, drz, dr, dz, dn = dgates
        torch.mul(dh, z, out=dh_prev)                             # dh_prev = dh * z + ...
        torch.sub(dh, dh_prev, out=dn)                            # dn = dh * (1 - z)
        tanh_backward_(dn, n)
        torch.sub(h_prev, n, out=dz)                              # dz = dh * (h_prev - n)
        dz.mul_(dh)
        if self.reset_after:
            hw, dhw = buf[0], gbuf[0]
            torch.mul(dn, hw[:, 2 * H :], out=dr)                 # dr = dn * (W_hn h_prev + b_hn)
            sigmoid_backward_(drz, rz)
            dhw[:, : 2 * H].copy_(drz)
            torch.mul(dn, r, out=dhw[:, 2 * H :])                 # d(W_hn h_prev + b_hn) = dn * r
            dh_in.addmm_(dhw, w.w_hh)
        else:
            drh = dn.mm(w.w_hh[2 * H :])                          # d(r * h_prev)
            torch.mul(drh, h_in, out=dr)
            sigmoid_backward_(drz, rz)
            dh_in.addcmul_(drh, r)
            dh_in.addmm_(drz, w.w_hh[: 2 * H])

    def recurrent_grads(self, w, prev, new, bufs, dgates, dnew, gbufs):
        h_prev = prev[-1]
        if self.reset_after:
            dhw = gbufs[0]
            return Grads(w_hh=matmul_over_steps(dhw, h_prev),
                         b_hh=None if w.b_hh is None else dhw.sum((0, 1)))
        H = self.hidden_size
        return Grads(w_hh=torch.cat([matmul_over_steps(dgates[..., : 2 * H], h_prev),
                                     matmul_over_steps(dgates[..., 2 * H :], bufs[0])]))


register("gru", GRUCellMath, layer="GRU",
         summary="GRU, torch's form: n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))")
register("gru-cho", GRUCellMath, options={"reset_after": False}, layer="GRU",
         summary="GRU, Cho et al. 2014's form: n_t = tanh(W_in x_t + b_in + W_hn (r_t * h_{t-1})"
                 " + b_hn)")
