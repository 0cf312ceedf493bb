"""Layer-normalised LSTM and GRU (Ba et al. 2016, as haste's LayerNormLSTM): one time step forward
and backward.

LN(u) = (u - mean(u)) / sqrt(var(u) + eps) over the last dimension (all gate blocks at once),
eps = 1e-5, var the biased variance, as torch.nn.functional.layer_norm computes it.

LSTM ("lstm-ln"), u_t = W_ih x_t, v_t = W_hh h_{t-1} (4H each, no bias inside):

    a_t = LN(u_t) * gamma_ih + b_ih + LN(v_t) * gamma_hh + b_hh     pre-activations (4H)
    i_t, f_t, o_t = sigma(a_i), sigma(a_f), sigma(a_o);  g_t = tanh(a_g)
    c_t = f_t * c_{t-1} + i_t * g_t                                 cell state (not normalised)
    h_t = o_t * tanh(LN(c_t) * gamma_c + beta_c)

GRU ("gru-ln", torch's reset_after form), u_t and v_t as above (3H each):

    a_t = LN(u_t) * gamma_ih + b_ih;  e_t = LN(v_t) * gamma_hh + b_hh
    r_t = sigma(a_r + e_r);  z_t = sigma(a_z + e_z);  n_t = tanh(a_n + r_t * e_n)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Parameters: torch's W_ih, W_hh, b_ih, b_hh in its gate layout ((W_i|W_f|W_g|W_o), (W_r|W_z|W_n));
b_ih and b_hh are the normalisations' biases. Besides them (``Cell.extra_params``, held end to end
in ``Weights.w_ch``): ln_ih_weight = gamma_ih, ln_hh_weight = gamma_hh (G*H each, initialised to
1), and for the LSTM ln_c_weight = gamma_c (H, 1) and ln_c_bias = beta_c (H, 0).

The engine hoists u_t = W_ih x_t for all steps without a bias (``hoisted_bias`` is None); each
step normalises its slice. The engine's dgates is then dL/du_t, which gives dW_ih and dx; the
gradients of the pre-activations (for the biases and gains) the backward keeps in grad_buffers.
The compiled engine runs the same steps in C++ (csrc/lstm_ln.cpp, csrc/gru_ln.cpp), with the
same buffers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Cell, Grads, matmul_over_steps, sigmoid_backward_, tanh_backward_
from .registry import register

EPS = 1e-5


def normalize(u: Tensor, out: Tensor, rstd: Tensor) -> None:
    """out = (u - mean(u)) * rstd over the last dimension, rstd = 1 / sqrt(var(u) + eps) (n, 1)
    kept for the backward. out may be u."""
    var, mean = torch.var_mean(u, -1, keepdim=True, correction=0)
    torch.rsqrt(var.add_(EPS), out=rstd)
    torch.sub(u, mean, out=out)
    out.mul_(rstd)


def normalize_backward_(g: Tensor, xhat: Tensor, rstd: Tensor) -> Tensor:
    """g <- dL/du from g = dL/d(xhat), in place, for xhat = LN(u) (``normalize``):
    dL/du = rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    mean_g = g.mean(-1, keepdim=True)
    mean_gx = (g * xhat).mean(-1, keepdim=True)
    return g.sub_(mean_g).addcmul_(xhat, mean_gx, value=-1).mul_(rstd)


def layer_norm(u: Tensor, gain: Tensor, bias: Tensor | None) -> Tensor:
    """LN(u) * gain + bias in plain differentiable ops (the reference steps)."""
    mean = u.mean(-1, keepdim=True)
    var = ((u - mean) ** 2).mean(-1, keepdim=True)
    y = (u - mean) / torch.sqrt(var + EPS) * gain
    return y if bias is None else y + bias


class LayerNormLSTMCellMath(Cell):
    """LSTM with LN(W_ih x_t), LN(W_hh h_{t-1}) and LN(c_t) (see the module docstring)."""

    gates = ("i", "f", "g", "o")
    state_names = ("h", "c")
    family_id, compiled_kernel = 3, True                # csrc/lstm_ln.cpp
    h_products = "only"
    bias_hh_hoisted = False

    def __init__(self, hidden_size: int):
        H = self.hidden_size = hidden_size
        self.state_sizes = (H, H)
        # LN(u_t), LN(v_t), LN(c_t), tanh(LN(c_t) * gamma_c + beta_c), the three rstd
        self.step_buffers = (4 * H, 4 * H, H, H, 3)
        # dL/da_t, dL/dv_t, dL/d(LN(c_t) * gamma_c + beta_c)
        self.grad_buffers = (4 * H, 4 * H, H)

    def extra_params(self):
        H = self.hidden_size
        return {"ln_ih_weight": (4 * H, 1.0), "ln_hh_weight": (4 * H, 1.0),
                "ln_c_weight": (H, 1.0), "ln_c_bias": (H, 0.0)}

    def hoisted_bias(self, w):
        return None                                   # the biases come after the normalisation

    def _vectors(self, w):
        H = self.hidden_size
        return w.w_ch.split([4 * H, 4 * H, H, H])     # gamma_ih, gamma_hh, gamma_c, beta_c

    def reference_step(self, w, xw, prev):
        h_prev, c_prev = prev
        g_ih, g_hh, g_c, b_c = self._vectors(w)
        a = layer_norm(xw, g_ih, w.b_ih) + layer_norm(h_prev.mm(w.w_hh.t()), g_hh, w.b_hh)
        a_i, a_f, a_g, a_o = a.split(self.hidden_size, -1)
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c = f * c_prev + i * g
        return o * torch.tanh(layer_norm(c, g_c, b_c)), c

    def blocks(self, t):
        """(all, i|f, i, f, g, o) views of a (..., 4H) gate tensor."""
        return (t, t[..., : 2 * self.hidden_size], *t.split(self.hidden_size, -1))

    def prepare(self, w, forward):
        super().prepare(w, forward)
        w.ln = self._vectors(w)
        w.bias = None if w.b_ih is None else w.b_ih + w.b_hh

    def forward_step(self, w, gates, prev, new, buf):
        h_prev, c_prev = prev
        h, c = new
        pre, sig, i, f, g, o = gates                   # pre: u_t = W_ih x_t on entry
        xu, xv, xc, tanh_n, rstd = buf
        g_ih, g_hh, g_c, b_c = w.ln
        normalize(pre, xu, rstd[:, 0:1])               # LN(u)
        torch.mm(h_prev, w.w_hh_t, out=xv)             # v = W_hh h_prev
        normalize(xv, xv, rstd[:, 1:2])                # LN(v)
        torch.mul(xu, g_ih, out=pre)                   # a = LN(u) g_ih + LN(v) g_hh + b
        pre.addcmul_(xv, g_hh)
        if w.bias is not None:
            pre.add_(w.bias)
        sig.sigmoid_()                                 # i, f
        g.tanh_()
        o.sigmoid_()
        torch.mul(f, c_prev, out=c)                    # c = f * c_prev + i * g
        c.addcmul_(i, g)
        normalize(c, xc, rstd[:, 2:3])                 # LN(c)
        torch.addcmul(b_c, xc, g_c, out=tanh_n)        # tanh(LN(c) g_c + b_c)
        tanh_n.tanh_()
        torch.mul(o, tanh_n, out=h)                    # h = o * tanh(...)

    def backward_step(self, w, gates, prev, new, buf, dnew, dgates, gbuf, dprev):
        h_prev, c_prev = prev
        dh, dc = dnew
        dh_prev, dc_prev = dprev
        _, sig, i, f, g, o = gates
        dpre, dsig, di, df, dg, do = dgates            # first dL/da, at the end dL/du
        xu, xv, xc, tanh_n, rstd = buf
        da, dv, dn = gbuf
        g_ih, g_hh, g_c, _ = w.ln
        torch.mul(dh, tanh_n, out=do)                  # h = o * tanh(n)
        torch.mul(dh, o, out=dn)
        tanh_backward_(dn, tanh_n)                     # dn: dL/d(LN(c) g_c + b_c)
        dc.add_(normalize_backward_(dn * g_c, xc, rstd[:, 2:3]))    # LN(c)
        torch.mul(dc, f, out=dc_prev)                  # c = f * c_prev + i * g
        torch.mul(dc, g, out=di)
        torch.mul(dc, c_prev, out=df)
        torch.mul(dc, i, out=dg)
        sigmoid_backward_(dsig, sig)                   # i, f
        tanh_backward_(dg, g)
        sigmoid_backward_(do, o)
        da.copy_(dpre)                                 # dL/da, kept for the biases and gains
        torch.mul(da, g_hh, out=dv)                    # LN(v) g_hh
        normalize_backward_(dv, xv, rstd[:, 1:2])
        torch.mm(dv, w.w_hh, out=dh_prev)              # v = W_hh h_prev
        dpre.mul_(g_ih)                                # LN(u) g_ih
        normalize_backward_(dpre, xu, rstd[:, 0:1])

    def recurrent_grads(self, w, prev, new, bufs, dgates, dnew, gbufs):
        xu, xv, xc, _, _ = bufs
        da, dv, dn = gbufs
        db = da.sum((0, 1))
        return Grads(w_hh=matmul_over_steps(dv, prev[0]), b_ih=db, b_hh=db,
                     w_ch=torch.cat([(da * xu).sum((0, 1)), (da * xv).sum((0, 1)),
                                     (dn * xc).sum((0, 1)), dn.sum((0, 1))]))


class LayerNormGRUCellMath(Cell):
    """GRU (torch's reset_after form) with LN(W_ih x_t) and LN(W_hh h_{t-1}) (see the module
    docstring)."""

    gates = ("r", "z", "n")
    family_id, compiled_kernel = 4, True                # csrc/gru_ln.cpp
    bias_hh_hoisted = False
    h_products = "slot"         # h_{t-1} also enters z_t * h_{t-1}, unmasked

    def __init__(self, hidden_size: int):
        H = self.hidden_size = hidden_size
        self.state_sizes = (H,)
        # LN(u_t), LN(v_t), e_t = LN(v_t) gamma_hh + b_hh, the two rstd
        self.step_buffers = (3 * H, 3 * H, 3 * H, 2)
        # dL/da_t, dL/de_t, dL/dv_t
        self.grad_buffers = (3 * H, 3 * H, 3 * H)

    def extra_params(self):
        H = self.hidden_size
        return {"ln_ih_weight": (3 * H, 1.0), "ln_hh_weight": (3 * H, 1.0)}

    def hoisted_bias(self, w):
        return None

    def _vectors(self, w):
        return w.w_ch.split(3 * self.hidden_size)      # gamma_ih, gamma_hh

    def reference_step(self, w, xw, prev):
        h_prev, h_in, H = prev[0], prev[-1], self.hidden_size    # h_in: what W_hh sees
        g_ih, g_hh = self._vectors(w)
        a_r, a_z, a_n = layer_norm(xw, g_ih, w.b_ih).split(H, -1)
        e_r, e_z, e_n = layer_norm(h_in.mm(w.w_hh.t()), g_hh, w.b_hh).split(H, -1)
        r, z = torch.sigmoid(a_r + e_r), torch.sigmoid(a_z + e_z)
        n = torch.tanh(a_n + r * e_n)
        return ((1 - z) * n + z * h_prev,)

    def blocks(self, t):
        """(all, r|z, r, z, n) views of a (..., 3H) gate tensor."""
        return (t, t[..., : 2 * self.hidden_size], *t.split(self.hidden_size, -1))

    def prepare(self, w, forward):
        super().prepare(w, forward)
        w.ln = self._vectors(w)

    def forward_step(self, w, gates, prev, new, buf):
        h_prev, h_in, (h,) = prev[0], prev[-1], new
        H = self.hidden_size
        pre, rz, r, z, n = gates                       # pre: u_t = W_ih x_t on entry
        xu, xv, e, rstd = buf
        g_ih, g_hh = w.ln
        normalize(pre, xu, rstd[:, 0:1])               # LN(u)
        torch.mm(h_in, w.w_hh_t, out=xv)               # v = W_hh h_prev
        normalize(xv, xv, rstd[:, 1:2])                # LN(v)
        torch.mul(xv, g_hh, out=e)                     # e = LN(v) g_hh + b_hh
        if w.b_hh is not None:
            e.add_(w.b_hh)
        torch.mul(xu, g_ih, out=pre)                   # a = LN(u) g_ih + b_ih
        if w.b_ih is not None:
            pre.add_(w.b_ih)
        rz.add_(e[:, : 2 * H]).sigmoid_()              # r, z = sigma(a + e)
        n.addcmul_(r, e[:, 2 * H :]).tanh_()           # n = tanh(a_n + r * e_n)
        torch.sub(h_prev, n, out=h)                    # h = n + z * (h_prev - n)
        h.mul_(z).add_(n)

    def backward_step(self, w, gates, prev, new, buf, dnew, dgates, gbuf, dprev):
        h_prev, (dh,) = prev[0], dnew
        dh_prev, dh_in = dprev[0], dprev[-1]      # the same tensor without recurrent dropout
        H = self.hidden_size
        _, rz, r, z, n = gates
        dpre, drz, dr, dz, dn = dgates                 # first dL/da, at the end dL/du
        xu, xv, e, rstd = buf
        da, de, dv = gbuf
        g_ih, g_hh = w.ln
        torch.mul(dh, z, out=dh_prev)                  # h = n + z * (h_prev - n)
        torch.sub(dh, dh_prev, out=dn)
        tanh_backward_(dn, n)                          # n = tanh(a_n + r * e_n)
        torch.sub(h_prev, n, out=dz)
        dz.mul_(dh)
        torch.mul(dn, e[:, 2 * H :], out=dr)
        sigmoid_backward_(drz, rz)                     # r, z = sigma(a + e)
        de[:, : 2 * H].copy_(drz)
        torch.mul(dn, r, out=de[:, 2 * H :])
        da.copy_(dpre)                                 # kept for b_ih and gamma_ih
        torch.mul(de, g_hh, out=dv)                    # e = LN(v) g_hh + b_hh
        normalize_backward_(dv, xv, rstd[:, 1:2])
        dh_in.addmm_(dv, w.w_hh)                       # v = W_hh h_prev
        dpre.mul_(g_ih)                                # a = LN(u) g_ih + b_ih
        normalize_backward_(dpre, xu, rstd[:, 0:1])

    def recurrent_grads(self, w, prev, new, bufs, dgates, dnew, gbufs):
        xu, xv, _, _ = bufs
        da, de, dv = gbufs
        return Grads(w_hh=matmul_over_steps(dv, prev[-1]), b_ih=da.sum((0, 1)),
                     b_hh=de.sum((0, 1)),
                     w_ch=torch.cat([(da * xu).sum((0, 1)), (de * xv).sum((0, 1))]))


register("lstm-ln", LayerNormLSTMCellMath,
         summary="LayerNorm LSTM (Ba et al. 2016): LN(W_ih x_t), LN(W_hh h_{t-1}), "
                 "h_t = o_t * tanh(LN(c_t))")
register("gru-ln", LayerNormGRUCellMath,
         summary="LayerNorm GRU, torch's form: LN(W_ih x_t) and LN(W_hh h_{t-1}) before the gates")
