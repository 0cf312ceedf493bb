"""LSTM: one time step forward and backward, with the peephole and coupled-gate variants.

    i_t = sigma(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi [+ p_i * c_{t-1}])   input gate
    f_t = sigma(W_if x_t + b_if + W_hf h_{t-1} + b_hf [+ p_f * c_{t-1}])   forget gate
    g_t = tanh (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)                      candidate memory
    c_t = f_t * c_{t-1} + i_t * g_t                                         cell state (long-term)
    o_t = sigma(W_io x_t + b_io + W_ho h_{t-1} + b_ho [+ p_o * c_t])        output gate
    m_t = o_t * tanh(c_t)
    h_t = m_t  (h_t = W_hr m_t with proj_size)                              hidden (short-term)

Coupled input and forget gates (CIFG): i_t = 1 - f_t, and the i rows are absent.
Gate layout of W_ih, W_hh, b_ih, b_hh as torch's: (W_i|W_f|W_g|W_o), coupled (W_f|W_g|W_o).
Peepholes w_ch: (p_i|p_f|p_o), coupled (p_f|p_o).
"""

from __future__ import annotations

import torch

from .base import Cell, Grads, matmul_over_steps, sigmoid_backward_, tanh_backward, tanh_backward_
from .registry import register

GATES = ("i", "f", "g", "o")
COUPLED_GATES = ("f", "g", "o")


class LSTMCellMath(Cell):
    family_id, compiled_kernel = 0, True
    state_names = ("h", "c")
    h_products = "only"

    def __init__(self, hidden_size: int, proj_size: int = 0, peephole: bool = False,
                 coupled: bool = False):
        self.hidden_size, self.proj_size = hidden_size, proj_size
        self.peephole, self.coupled = peephole, coupled
        self.gates = COUPLED_GATES if coupled else GATES
        self.peephole_vectors = (2 if coupled else 3) if peephole else 0
        self.state_sizes = (proj_size or hidden_size, hidden_size)
        # tanh(c_t), and m_t = o_t * tanh(c_t) when h_t is its projection
        self.step_buffers = (hidden_size, hidden_size) if proj_size else (hidden_size,)

    def spec(self):
        H = self.hidden_size
        return [0, H, self.proj_size or H, int(self.peephole), int(self.coupled), 1, 0]

    @classmethod
    def from_spec(cls, spec):
        _, H, P, peephole, coupled, _, _ = spec
        return cls(H, 0 if P == H else P, bool(peephole), bool(coupled))

    def gate_values(self, gates):
        return {"i": 1 - gates["f"], **gates} if self.coupled else gates

    def reference_step(self, w, xw, prev):
        h_prev, c_prev = prev
        pre = xw + h_prev.mm(w.w_hh.t())
        if self.coupled:
            a_f, a_g, a_o = pre.split(self.hidden_size, -1)
            a_i = None
        else:
            a_i, a_f, a_g, a_o = pre.split(self.hidden_size, -1)
        if self.peephole:
            p = w.w_ch.split(self.hidden_size)
            p_i, p_f, p_o = (None, *p) if self.coupled else p
            a_f = a_f + p_f * c_prev
            if a_i is not None:
                a_i = a_i + p_i * c_prev
        f, g = torch.sigmoid(a_f), torch.tanh(a_g)
        i = 1 - f if self.coupled else torch.sigmoid(a_i)
        c = f * c_prev + i * g
        o = torch.sigmoid(a_o + p_o * c if self.peephole else a_o)
        m = o * torch.tanh(c)
        return (m.mm(w.w_hr.t()) if self.proj_size else m), c

    def blocks(self, t):
        """Views of a (..., G*H) gate tensor that the steps take: (all, the sigma block, then
        i, f, g, o), without i when coupled. The sigma block is (i|f), or f when coupled."""
        H = self.hidden_size
        return (t, t[..., : (1 if self.coupled else 2) * H], *t.split(H, -1))

    def prepare(self, w, forward):
        super().prepare(w, forward)
        if self.peephole:
            p = w.w_ch.split(self.hidden_size)                 # (p_i, p_f, p_o), no p_i if coupled
            w.peepholes = (None, *p) if self.coupled else p

    def forward_step(self, w, gates, prev, new, buf):
        h_prev, c_prev = prev
        h, c = new
        tanh_c = buf[0]
        pre, sig, *igfo = gates
        i, f, g, o = (None, *igfo) if self.coupled else igfo
        pre.addmm_(h_prev, w.w_hh_t)                           # pre-activations (n, G*H)
        if self.peephole:
            p_i, p_f, p_o = w.peepholes
            if p_i is not None:
                i.addcmul_(c_prev, p_i)
            f.addcmul_(c_prev, p_f)
        sig.sigmoid_()                                         # i, f
        g.tanh_()
        if self.coupled:
            torch.sub(c_prev, g, out=c)                        # c = g + f * (c_prev - g)
            c.mul_(f).add_(g)
        else:
            torch.mul(f, c_prev, out=c)                        # c = f * c_prev + i * g
            c.addcmul_(i, g)
        if self.peephole:
            o.addcmul_(c, p_o)
        o.sigmoid_()
        torch.tanh(c, out=tanh_c)
        if self.proj_size:
            m = buf[1]
            torch.mul(o, tanh_c, out=m)
            torch.mm(m, w.w_hr.t(), out=h)                     # h = W_hr m
        else:
            torch.mul(o, tanh_c, out=h)                        # h = o * tanh(c)

    def backward_step(self, w, gates, prev, new, buf, dnew, dgates, gbuf, dprev):
        h_prev, c_prev = prev
        dh, dc = dnew                   # dc: dL/dc_t from step t+1 and outside; made total here
        dh_prev, dc_prev = dprev
        tanh_c = buf[0]
        _, sig, *igfo = gates
        i, f, g, o = (None, *igfo) if self.coupled else igfo
        dpre, dsig, *digfo = dgates
        di, df, dg, do = (None, *digfo) if self.coupled else digfo
        dm = dh.mm(w.w_hr) if self.proj_size else dh           # dL/dm_t
        torch.mul(dm, tanh_c, out=do)                          # do = dm * tanh(c)
        dc.addcmul_(tanh_backward(dm, tanh_c), o)              # dc += dm * o * (1 - tanh(c)^2)
        sigmoid_backward_(do, o)                               # do -> d(o pre-activation)
        if self.peephole:
            p_i, p_f, p_o = w.peepholes
            dc.addcmul_(do, p_o)                               # o_t saw c_t
        torch.mul(dc, f, out=dc_prev)                          # dc_prev = dc * f
        if self.coupled:
            torch.sub(c_prev, g, out=df)                       # df = dc * (c_prev - g)
            df.mul_(dc)
            torch.sub(dc, dc_prev, out=dg)                     # dg = dc * (1 - f)
        else:
            torch.mul(dc, g, out=di)                           # di = dc * g
            torch.mul(dc, c_prev, out=df)                      # df = dc * c_prev
            torch.mul(dc, i, out=dg)                           # dg = dc * i
        sigmoid_backward_(dsig, sig)                           # di, df -> pre-activations
        tanh_backward_(dg, g)
        if self.peephole:
            if p_i is not None:
                dc_prev.addcmul_(di, p_i)                      # i_t and f_t saw c_{t-1}
            dc_prev.addcmul_(df, p_f)
        torch.mm(dpre, w.w_hh, out=dh_prev)                    # dh_prev = dgates W_hh

    def recurrent_grads(self, w, prev, new, bufs, dgates, dnew, gbufs):
        grads = Grads(w_hh=matmul_over_steps(dgates, prev[0]))
        if self.peephole:
            _, _, *digfo = self.blocks(dgates)
            di, df, _, do = (None, *digfo) if self.coupled else digfo
            c_prev, c = prev[1], new[1]
            dp = [(df * c_prev).sum((0, 1)), (do * c).sum((0, 1))]      # dp_f, dp_o
            if di is not None:
                dp.insert(0, (di * c_prev).sum((0, 1)))                 # dp_i
            grads.w_ch = torch.cat(dp)
        if self.proj_size:
            grads.w_hr = matmul_over_steps(dnew[0], bufs[1])   # sum_t dh_t^T m_t
        return grads


register("lstm", LSTMCellMath, layer="LSTM",
         summary="LSTM: input, forget and output gates, candidate memory, cell state")
register("peephole", LSTMCellMath, options={"peephole": True}, layer="LSTM",
         summary="LSTM with peepholes: i, f see c_{t-1}, o sees c_t")
register("coupled", LSTMCellMath, options={"coupled": True}, layer="LSTM",
         summary="LSTM with coupled input and forget gates: i_t = 1 - f_t")
