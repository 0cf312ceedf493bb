"""sLSTM (Beck et al. 2024, xLSTM, Section 2.2): exponential input gate, normaliser state, one
time step forward and backward.

Pre-activations, x in (i, f, z, o), R_x block-diagonal with num_heads heads (head-wise
recurrence: unit j of head k sees only h_{t-1}[k*DH:(k+1)*DH], DH = H / num_heads):

    x~_t = W_x x_t + R_x h_{t-1} + b_x
    z_t = tanh(z~_t)                     cell input
    i_t = exp(i~_t)                      input gate (exponential)
    f_t = sigma(f~_t) or exp(f~_t)       forget gate (forget_gate="sigmoid" or "exp")
    o_t = sigma(o~_t)                    output gate
    c_t = f_t c_{t-1} + i_t z_t          cell state
    n_t = f_t n_{t-1} + i_t              normaliser state
    h_t = o_t c_t / n_t                  hidden state

computed in the stabilised form, with a fourth state m_t:

    m_t  = max(log f_t + m_{t-1}, i~_t)      (m_t = i~_t where n_{t-1} = 0: the first step)
    i'_t = exp(i~_t - m_t)
    f'_t = exp(min(log f_t + m_{t-1} - m_t, 0))
    c_t  = f'_t c_{t-1} + i'_t z_t;  n_t = f'_t n_{t-1} + i'_t;  h_t = o_t c_t / n_t

(c_t and n_t are the paper's scaled by exp(-m_t), which h_t does not see). The min(., 0) acts
only at a step from n_{t-1} = 0, where it keeps f'_t <= 1 as the xlstm package's min(f', 1) does
(f'_t then multiplies c_{t-1}, n_{t-1}, zero from a zero state). The first-step rule is an
elementwise ``where`` on n_{t-1} == 0, not a Python ``if`` on tensor values (the package's
``if torch.all(n == 0)``), so the step traces and exports. From n_0 = 0 (or n_0 >= 1) every
n_t >= 1 (one of i'_t, f'_t is 1), and |c_t| <= n_t, so |h_t| <= 1 for any finite input.

States (h, c, n, m), h first. Gate layout of W_ih (4H, I), b_ih, b_hh (4H,) as torch's LSTM and
the package: (W_i|W_f|W_z|W_o), units head-major inside each block (unit k*DH + j is unit j of
head k). W_hh holds only the diagonal blocks: (4H, DH), row g*H + k*DH + j multiplies
h[k*DH:(k+1)*DH]. The gate tensor keeps (i'_t | f'_t | z_t | o_t): the stabilised gates that
multiply the states (what a trace shows as i and f).

The backward is exact in m as well (gradients of c_t, n_t and m_t themselves are right, not only
of h_t): m_t = i~_t where i'_t == 1 (n_{t-1} = 0, or i~_t >= log f_t + m_{t-1}), else
log f_t + m_{t-1}. A NaN in the input makes the outputs of that sequence NaN from that step on
(as torch's LSTM does); other sequences are untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Cell, Grads, matmul_over_steps, sigmoid_backward_, tanh_backward_
from .registry import register

GATES = ("i", "f", "z", "o")
FORGET_GATES = ("sigmoid", "exp")


class SLSTMCellMath(Cell):
    """sLSTM with num_heads heads and a sigmoid or exponential forget gate (module docstring)."""

    gates = GATES
    tanh_gates = ("z",)
    trace_names = {"i": "input gate i'_t = exp(i~_t - m_t)", "f": "forget gate f'_t (stabilised)",
                   "z": "cell input z_t", "n": "normaliser n_t", "m": "stabiliser m_t"}
    state_names = ("h", "c", "n", "m")
    family_id, compiled_kernel = 5, True                # csrc/slstm.cpp
    h_products = "only"

    def __init__(self, hidden_size: int, num_heads: int = 1, forget_gate: str = "sigmoid"):
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"sLSTM: num_heads must be a positive int, got {num_heads!r}")
        if hidden_size % num_heads:
            raise ValueError(f"sLSTM: num_heads must divide hidden_size; got num_heads="
                             f"{num_heads}, hidden_size={hidden_size}")
        if forget_gate not in FORGET_GATES:
            raise ValueError(f"sLSTM: forget_gate must be one of {FORGET_GATES}, "
                             f"got {forget_gate!r}")
        H = self.hidden_size = hidden_size
        self.num_heads, self.head_size, self.forget_gate = num_heads, H // num_heads, forget_gate
        self.state_sizes = (H, H, H, H)
        # d log f_t / d f~_t = 1 - sigma(f~_t) for the sigmoid gate (1 for exp: none kept)
        self.step_buffers = (H,) if forget_gate == "sigmoid" else ()

    def weight_hh_shape(self) -> tuple[int, int]:
        return (4 * self.hidden_size, self.head_size)

    def spec(self):
        H = self.hidden_size
        return [self.family_id, H, H, self.num_heads, int(self.forget_gate == "exp"), 0, 0]

    @classmethod
    def from_spec(cls, spec):
        return cls(spec[1], spec[3], "exp" if spec[4] else "sigmoid")

    # ------------------------------------------------------------ the head-wise product
    def recurrent_product(self, h: Tensor, w_hh: Tensor) -> Tensor:
        """R h for h (n, H) in plain differentiable ops: (n, 4H), gate-major."""
        K, D = self.num_heads, self.head_size
        if K == 1:
            return h.mm(w_hh.t())
        r = torch.einsum("bkd,gkjd->bgkj", h.view(-1, K, D), w_hh.view(4, K, D, D))
        return r.reshape(h.shape[0], -1)

    def prepare(self, w, forward):
        K, D = self.num_heads, self.head_size
        if K == 1:
            super().prepare(w, forward)
        elif forward:                                   # [k, d, (g, j)]
            w.w_heads = w.w_hh.view(4, K, D, D).permute(1, 3, 0, 2).reshape(K, D, 4 * D)
        else:                                           # [k, (g, j), d]
            w.w_heads = w.w_hh.view(4, K, D, D).permute(1, 0, 2, 3).reshape(K, 4 * D, D)

    def _add_recurrent(self, w, h_prev: Tensor, pre: Tensor) -> None:
        """pre (n, 4H) += R h_prev, one product per head."""
        K, D = self.num_heads, self.head_size
        if K == 1:
            pre.addmm_(h_prev, w.w_hh_t)
            return
        n = h_prev.shape[0]
        r = torch.bmm(h_prev.view(n, K, D).transpose(0, 1), w.w_heads)     # (K, n, 4*DH)
        pre.view(n, 4, K, D).add_(r.view(K, n, 4, D).permute(1, 2, 0, 3))

    def _recurrent_backward(self, w, dpre: Tensor, dh_prev: Tensor) -> None:
        """dh_prev (n, H) = R^T dpre."""
        K, D = self.num_heads, self.head_size
        if K == 1:
            torch.mm(dpre, w.w_hh, out=dh_prev)
            return
        n = dpre.shape[0]
        dk = dpre.view(n, 4, K, D).permute(2, 0, 1, 3).reshape(K, n, 4 * D)
        dh_prev.view(n, K, D).copy_(torch.bmm(dk, w.w_heads).transpose(0, 1))

    # ------------------------------------------------------------ one step
    def reference_step(self, w, xw, prev):
        h_prev, c_prev, n_prev, m_prev = prev
        pre = xw + self.recurrent_product(h_prev, w.w_hh)
        a_i, a_f, a_z, a_o = pre.split(self.hidden_size, -1)
        u = (F.logsigmoid(a_f) if self.forget_gate == "sigmoid" else a_f) + m_prev
        m = torch.where(n_prev == 0, a_i, torch.maximum(u, a_i))
        i, f = torch.exp(a_i - m), torch.exp(torch.clamp(u - m, max=0))
        z, o = torch.tanh(a_z), torch.sigmoid(a_o)
        c = f * c_prev + i * z
        n = f * n_prev + i
        return o * c / n, c, n, m

    def blocks(self, t):
        """(all, i, f, z, o) views of a (..., 4H) gate tensor."""
        return (t, *t.split(self.hidden_size, -1))

    def forward_step(self, w, gates, prev, new, buf):
        h_prev, c_prev, n_prev, m_prev = prev
        h, c, n, m = new
        pre, i, f, z, o = gates
        self._add_recurrent(w, h_prev, pre)                    # pre-activations (n, 4H)
        if self.forget_gate == "sigmoid":
            torch.sigmoid(f.neg(), out=buf[0])                 # 1 - f_t = d log f_t / d f~_t
            f.copy_(F.logsigmoid(f))                           # log f_t
        f.add_(m_prev)                                         # u = log f_t + m_{t-1}
        torch.maximum(f, i, out=m)                             # m_t = max(u, i~_t)
        torch.where(n_prev == 0, i, m, out=m)                  # m_t = i~_t from n_{t-1} = 0
        i.sub_(m).exp_()                                       # i'_t = exp(i~_t - m_t)
        f.sub_(m).clamp_max_(0).exp_()                         # f'_t = exp(min(u - m_t, 0))
        z.tanh_()
        o.sigmoid_()
        torch.mul(f, c_prev, out=c)                            # c = f' c_prev + i' z
        c.addcmul_(i, z)
        torch.mul(f, n_prev, out=n)                            # n = f' n_prev + i'
        n.add_(i)
        torch.div(c, n, out=h)                                 # h = o c / n
        h.mul_(o)

    def backward_step(self, w, gates, prev, new, buf, dnew, dgates, gbuf, dprev):
        _, c_prev, n_prev, _ = prev
        h, c, n, _ = new
        dh, dc, dn, dm = dnew           # dc, dn: from step t+1 and outside; made total here
        dh_prev, dc_prev, dn_prev, dm_prev = dprev
        _, i, f, z, o = gates
        dpre, di, df, dz, do = dgates
        torch.div(dh, n, out=dz)                               # dh / n, for a moment
        torch.mul(dz, c, out=do)                               # h = o c / n
        dc.addcmul_(dz, o)
        dn.addcmul_(dz, h, value=-1)
        torch.mul(dc, c_prev, out=df)                          # df' = dc c_prev + dn n_prev
        df.addcmul_(dn, n_prev)
        torch.mul(dc, z, out=di)                               # di' = dc z + dn
        di.add_(dn)
        torch.mul(dc, i, out=dz)                               # dz = dc i'
        torch.mul(dc, f, out=dc_prev)
        torch.mul(dn, f, out=dn_prev)
        di.mul_(i)                                             # g_i: through i' = exp(i~ - m)
        df.mul_(f)                                             # g_f: through f' = exp(u - m)
        df.masked_fill_((n_prev == 0) & (f == 1), 0)           # min(u - m, 0) clipped at 0
        # m_t = i~_t where i' == 1, else u: d i~ = dm - g_f, du = g_f; else d i~ = g_i,
        # du = dm - g_i
        to_i = i == 1
        torch.where(to_i, df, dm - di, out=dm_prev)            # du = dL/dm_{t-1}
        di.copy_(torch.where(to_i, dm - df, di))
        if self.forget_gate == "sigmoid":
            torch.mul(dm_prev, buf[0], out=df)                 # u = log sigma(f~) + m_{t-1}
        else:
            df.copy_(dm_prev)                                  # u = f~ + m_{t-1}
        tanh_backward_(dz, z)
        sigmoid_backward_(do, o)
        self._recurrent_backward(w, dpre, dh_prev)

    def recurrent_grads(self, w, prev, new, bufs, dgates, dnew, gbufs):
        K, D = self.num_heads, self.head_size
        if K == 1:
            return Grads(w_hh=matmul_over_steps(dgates, prev[0]))
        dg = dgates.reshape(-1, 4, K, D)
        hp = prev[0].reshape(-1, K, D)
        return Grads(w_hh=torch.einsum("bgkj,bkd->gkjd", dg, hp).reshape(4 * K * D, D))


# ---------------------------------------------------------------------- the xlstm package
def _headwise_dense(weight: Tensor) -> Tensor:
    """The dense (H, H) matrix of a head-wise linear map, weight (K, DH_out, DH_in):
    out[k*DH + o] = sum_d weight[k, o, d] x[k*DH + d]."""
    return torch.block_diag(*weight.unbind(0))


def from_xlstm_cell(cell) -> tuple[Tensor, Tensor]:
    """(weight_hh (4H, DH), bias (4H,)) from an xlstm ``sLSTMCell`` (any backend), read through
    its backend-independent ("external") layouts: recurrent_kernel (K, DH_in, 4, DH_out),
    R[k, d, g, j] = the weight from h[k*DH + d] to unit j of head k in gate g, and bias
    (K, 4, DH); gates in the order i, f, z, o (as lstmkit's)."""
    config = cell.config
    if config.function != "slstm":
        raise ValueError(f"from_xlstm: expected an sLSTM cell (config.function 'slstm'), got "
                         f"{config.function!r}")
    K, D = config.num_heads, config.hidden_size // config.num_heads
    r = cell.recurrent_kernel[:].reshape(K, D, 4, D)                  # [k, d, g, j]
    b = cell.bias[:].reshape(K, 4, D)                                 # [k, g, j]
    return (r.permute(2, 0, 3, 1).reshape(4 * K * D, D).clone(),
            b.permute(1, 0, 2).reshape(4 * K * D).clone())


def from_xlstm(layer) -> dict[str, Tensor]:
    """The parameters of ``lstmkit.sLSTM(H, H, num_heads=K)`` (one layer; ``load_state_dict``
    takes them) that compute what an xlstm ``sLSTMLayer`` computes before its group norm and
    dropout: its cell's output y and final state (h, c, n, m) for the same input and state.

    Conventions: the package's cell takes the concatenated pre-activations (i|f|z|o), each head
    -major (K, DH), and its layer makes them with four head-wise linear maps (weight (K, DH,
    DH), no bias): the i pre-activation by the map it names ``fgate``, f by ``igate`` (the
    package's ``forward`` swaps them), z by ``zgate``, o by ``ogate``. Each map becomes a
    block-diagonal (H, H) block of weight_ih_l0 (4H, H). The cell's bias goes to bias_ih_l0;
    bias_hh_l0 is zero (only their sum counts). Its state tensor (4, N, H) is lstmkit's state
    tuple (h, c, n, m) stacked. The layer's causal convolution (conv1d_kernel_size > 0, feeding
    i and f) has no counterpart here: such a layer is refused.

    First steps: the package sets m_t = i~_t when n == 0 over its whole state tensor (one test
    for the batch), lstmkit unit by unit. From a zero state, or a state with n > 0 everywhere,
    the two agree; from a state where only some units have n = 0 (and c = 0, as a fresh unit
    has), h_t and c_t / n_t still agree (they do not depend on the stabiliser), while c, n and
    m of those units differ by the factor exp(m) that the stabiliser leaves free.
    """
    config = layer.config
    if getattr(config, "conv1d_kernel_size", 0) > 0:
        raise ValueError("from_xlstm: lstmkit's sLSTM has no causal convolution; got an "
                         f"sLSTMLayer with conv1d_kernel_size={config.conv1d_kernel_size} "
                         "(build it with conv1d_kernel_size=0)")
    weight_hh, bias = from_xlstm_cell(layer.slstm_cell)
    maps = (layer.fgate, layer.igate, layer.zgate, layer.ogate)       # i, f, z, o
    weight_ih = torch.cat([_headwise_dense(m.weight.detach()) for m in maps])
    bias_ih = bias + torch.cat([m.bias.detach() if m.bias is not None
                                else bias.new_zeros(bias.shape[0] // 4) for m in maps])
    return {"weight_ih_l0": weight_ih, "weight_hh_l0": weight_hh, "bias_ih_l0": bias_ih,
            "bias_hh_l0": torch.zeros_like(bias)}


register("slstm", SLSTMCellMath,
         summary="sLSTM (xLSTM): exponential input gate, normaliser state, head-wise recurrence")
