"""mLSTM (xLSTM, Beck et al. 2024, Section 2.3): the matrix memory in three equal forms.

Per head, head size d, paper notation (q_t, k_t, v_t in R^d; k_t already scaled by 1/sqrt(d)):

    C_t = f_t C_{t-1} + i_t v_t k_t^T              matrix memory   (d, d), C[a, b] = v_a k_b
    n_t = f_t n_{t-1} + i_t k_t                    normaliser      (d,)
    h~_t = C_t q_t / max(|n_t^T q_t|, 1)
    i_t = exp(i~_t),  f_t = sigmoid(f~_t)  (forget_gate="sigmoid")  or  exp(f~_t)  ("exp")

Stabilised: the states are kept as C~_t = exp(-m_t) C_t, n~_t = exp(-m_t) n_t with

    m_t = max(log f_t + m_{t-1}, i~_t),    h~_t = C~_t q_t / (max(|n~_t^T q_t|, exp(-m_t)) + eps)

so every exp() argument is <= 0. An identity step, i~_t = -inf and log f_t = 0 (f~_t = +inf
for the sigmoid gate, 0 for exp), leaves the state as it was in every form, gradients included:
the layer's lengths= pads with such steps (at the end of each sequence, after one valid step).
With eps = 0 (the default) h~ does not depend on m: m is a
free choice of scale. The forms below all choose the same one, m_t = the maximum over the row t
of the log decay matrix log D_tj = F_t - F_j + i~_j (j <= t, F_t = sum_{s<=t} log f_s), and over
m_0 + F_t when there is an initial state; with no initial state that is the recurrence started
from m_0 = -inf. eps > 0 is xLSTM's package convention (eps = 1e-6 there) and makes h~ depend on
m by eps * exp(m) on the true scale; the forms then agree only because they share m.

Shapes: q, k, v (*, T, d), i~ and f~ (*, T) where * is any batch shape, usually (B, NH);
state (C~, n~, m) of shapes (*, d, d), (*, d), (*). Every form returns (h~ (*, T, d), state).

    parallel   quadratic in T, for training; a torch.autograd.Function with its backward
               written out (below), an initial state entering as one more decayed term
    chunkwise  linear in T: the parallel form inside chunks of chunk_size steps, the states
               passed between chunks by the recurrence (its backward written out too);
               any T (a shorter last chunk)
    recurrent  a loop over ``step``, one step for streaming inference; plain autograd
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .base import transformed
from .registry import register

FORGET_GATES = ("sigmoid", "exp")
State = tuple[Tensor, Tensor, Tensor]


def log_forget(f_pre: Tensor, forget_gate: str) -> Tensor:
    """log f_t from f~_t: logsigmoid(f~) or f~ itself."""
    return F.logsigmoid(f_pre) if forget_gate == "sigmoid" else f_pre


def _lower(m: Tensor) -> Tensor:
    """exp(-m), the stabilised 1 of max(|n^T q|, 1); capped below overflow so its gradient
    (zero where the cap holds) never meets inf * 0."""
    return torch.exp(torch.clamp(-m, max=math.log(torch.finfo(m.dtype).max) - 1.0))


# ----------------------------------------------------------------------------------------------
# recurrent form


def step(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, f_pre: Tensor,
         state: State | None = None, *, forget_gate: str = "sigmoid",
         eps: float = 0.0) -> tuple[Tensor, State]:
    """One step: q, k, v (*, d), i~ and f~ (*); returns (h~_t (*, d), the new state). Builds
    new tensors only (no in-place update), so a loop over it can be backpropagated. Its
    compiled twin for inference is ``lstmkit.engine.compiled.mlstm_step`` (csrc/mlstm.cpp),
    which lstmkit.mLSTM runs under no_grad."""
    if state is None:                           # m_0 = -inf: C_t = v k^T, n_t = k, m_t = i~_t
        m = i_pre
        C = v.unsqueeze(-1) * k.unsqueeze(-2)                                     # (*, d, d)
        n = k
    else:
        C0, n0, m0 = state
        log_f = log_forget(f_pre, forget_gate)
        m = torch.maximum(log_f + m0, i_pre)
        f = torch.exp(log_f + m0 - m)           # f_t, stabilised
        i = torch.exp(i_pre - m)                # i_t, stabilised
        C = f[..., None, None] * C0 + i[..., None, None] * (v.unsqueeze(-1) * k.unsqueeze(-2))
        n = f[..., None] * n0 + i[..., None] * k
    num = (C @ q.unsqueeze(-1)).squeeze(-1)     # C~_t q_t                                (*, d)
    den = torch.maximum((n * q).sum(-1).abs(), _lower(m)) + eps                        # (*,)
    return num / den[..., None], (C, n, m)


def recurrent(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, f_pre: Tensor,
              state: State | None = None, *, forget_gate: str = "sigmoid",
              eps: float = 0.0) -> tuple[Tensor, State]:
    """The step loop over T: (h~ (*, T, d), final state)."""
    _check(q, k, v, i_pre, f_pre, state, forget_gate)
    hs = []
    for t in range(q.shape[-2]):
        h, state = step(q[..., t, :], k[..., t, :], v[..., t, :], i_pre[..., t], f_pre[..., t],
                        state, forget_gate=forget_gate, eps=eps)
        hs.append(h)
    return torch.stack(hs, -2), state


# ----------------------------------------------------------------------------------------------
# parallel form, forward and backward side by side


class _Parallel(torch.autograd.Function):
    """h~ and the final state over T steps at once (every tensor (*, T, ...) as in ``parallel``).

    Forward, with S the masked, decayed attention of the paper's parallel form:
        log D_tj = F_t - F_j + i~_j (j <= t, else -inf),  b_t = m_0 + F_t  (initial state)
        m_t = max(max_j log D_tj, b_t),  D~ = exp(log D - m),  g_t = exp(b_t - m_t)
        S = (q k^T) * D~,  num_t = (S v)_t + g_t C~_0 q_t,  s_t = sum_j S_tj + g_t n~_0^T q_t
        den_t = max(|s_t|, exp(-m_t)) + eps,  h~_t = num_t / den_t
        C~_T = sum_j D~_Tj v_j k_j^T + g_T C~_0,  n~_T = sum_j D~_Tj k_j + g_T n~_0
    Backward: every line below mirrors one of these. m enters through the row maximum only
    (its argmax), and only where the result depends on it: eps > 0 and the final state's scale.
    """

    @staticmethod
    def forward(ctx, q, k, v, i_pre, f_pre, C0, n0, m0, forget_gate, eps, kernels=None):
        T = q.shape[-2]
        has_state = C0 is not None
        ctx.forget_gate, ctx.eps, ctx.has_state, ctx.kernels = forget_gate, eps, has_state, \
            kernels
        ctx.set_materialize_grads(False)
        if kernels is not None:         # the same lines in C++ (csrc/mlstm.cpp)
            h, C_T, n_T, m_T, D, S, s, lower, den, g, arg = kernels[0](
                q, k, v, i_pre, f_pre, C0, n0, m0, forget_gate == "exp", eps)
            ctx.save_for_backward(q, k, v, f_pre, D, S, s, lower, den, h, C_T, n_T, arg,
                                  *((C0, n0, g) if has_state else ()))
            return h, C_T, n_T, m_T
        F_ = log_forget(f_pre, forget_gate).cumsum(-1)                                  # (*, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        log_D = F_[..., :, None] - F_[..., None, :]                                  # (*, T, T)
        log_D.add_(i_pre[..., None, :]).masked_fill_(~causal, -math.inf)
        m = log_D.amax(-1)                                                              # (*, T)
        if has_state:
            b = F_ + m0[..., None]
            m = torch.maximum(m, b)
            g = torch.exp(b - m)                                                        # (*, T)
        D = log_D.sub_(m[..., None]).exp_()            # in place: log D is not needed again
        S = (q @ k.mT).mul_(D)
        num = S @ v                                                                  # (*, T, d)
        s = S.sum(-1)
        w = D[..., -1, :]                        # the last row: weights of the final state
        C_T = (v * w[..., None]).mT @ k                                              # (*, d, d)
        n_T = (k * w[..., None]).sum(-2)
        if has_state:
            num = num + g[..., None] * (q @ C0.mT)
            s = s + g * (q @ n0[..., None]).squeeze(-1)
            C_T = C_T + g[..., -1, None, None] * C0
            n_T = n_T + g[..., -1, None] * n0
        else:
            g = None
        lower = _lower(m)
        den = torch.maximum(s.abs(), lower) + eps
        h = num / den[..., None]
        ctx.save_for_backward(q, k, v, f_pre, D, S, s, lower, den, h, C_T, n_T,
                              *((C0, n0, g) if has_state else ()))
        return h, C_T, n_T, m[..., -1]

    @staticmethod
    @once_differentiable        # a second derivative raises rather than differentiating this
    def backward(ctx, dh, dC_T, dn_T, dm_T):
        if ctx.kernels is not None:
            q, k, v, f_pre, D, S, s, lower, den, h, C_T, n_T, arg, *saved = ctx.saved_tensors
            C0, n0, g = saved if ctx.has_state else (None, None, None)
            grads = ctx.kernels[1](q, k, v, f_pre, D, S, s, lower, den, h, C_T, n_T, arg, C0,
                                   n0, g, dh, dC_T, dn_T, dm_T, ctx.forget_gate == "exp",
                                   ctx.eps)
            return (*grads, None, None, None)
        q, k, v, f_pre, D, S, s, lower, den, h, C_T, n_T, *saved = ctx.saved_tensors
        C0, n0, g = saved if ctx.has_state else (None, None, None)
        T = q.shape[-2]
        dq = dk = dv = None                      # None: zero so far (no zero tensors to add to)
        dm = torch.zeros_like(s)                 # through the argmax of m_t
        dg = torch.zeros_like(s) if ctx.has_state else None
        dC0 = torch.zeros_like(C0) if ctx.has_state else None
        dn0 = torch.zeros_like(n0) if ctx.has_state else None
        if dh is not None:
            dnum = dh / den[..., None]                                  # h = num / den
            dden = -(dh * h).sum(-1) / den
            ds = dden * torch.sign(s) * (s.abs() >= lower)              # den = max(|s|, lower)
            dS = (dnum @ v.mT).add_(ds[..., None])                      # num = S v, s = sum S
            dv = S.mT @ dnum
            if ctx.eps:
                dm = dm + ctx.eps * dden                                # eps * exp(m) term
            if ctx.has_state:                                           # g C~_0 q, g n~_0^T q
                dq = g[..., None] * (dnum @ C0) + (g * ds)[..., None] * n0[..., None, :]
                dC0 = dC0 + (g[..., None] * dnum).mT @ q
                dn0 = dn0 + ((g * ds)[..., None] * q).sum(-2)
                dg = dg + (dnum * (q @ C0.mT)).sum(-1) + ds * (q @ n0[..., None]).squeeze(-1)
        else:
            dS = torch.zeros_like(S)
        dw = torch.zeros_like(s)                 # into the last row's weights w_j = D~_Tj
        w = D[..., -1, :]
        if dC_T is not None:                                            # C_T = (v w)^T k
            dv = _plus(dv, w[..., None] * (k @ dC_T.mT))
            dk = w[..., None] * (v @ dC_T)
            dw = dw + ((v @ dC_T) * k).sum(-1)
            dm[..., -1] -= (dC_T * C_T).sum((-2, -1))                   # C~_T ~ exp(-m_T)
            if ctx.has_state:
                dC0 = dC0 + g[..., -1, None, None] * dC_T
                dg[..., -1] += (dC_T * C0).sum((-2, -1))
        if dn_T is not None:                                            # n_T = sum_j w_j k_j
            dk = _plus(dk, w[..., None] * dn_T[..., None, :])
            dw = dw + (k * dn_T[..., None, :]).sum(-1)
            dm[..., -1] -= (dn_T * n_T).sum(-1)
            if ctx.has_state:
                dn0 = dn0 + g[..., -1, None] * dn_T
                dg[..., -1] += (dn_T * n0).sum(-1)
        if dm_T is not None:
            dm[..., -1] += dm_T
        dqk = dS * D                                                    # S = (q k^T) * D
        dq = _plus(dq, dqk @ k)
        dk = _plus(dk, dqk.mT @ q)
        if dv is None:
            dv = torch.zeros_like(v)
        dlog_D = dS.mul_(S)                                             # D = exp(log D - m)
        dlog_D[..., -1, :] += dw * w
        routed_b = None
        if dm.any():    # m_t = max over [log D_t0 .. log D_tt, b_t]: to the argmax
            weights = torch.cat([D, (g if ctx.has_state else torch.zeros_like(s))[..., None]], -1)
            arg = weights.argmax(-1, keepdim=True)                      # exp(0) = 1 there
            routed = torch.zeros_like(weights).scatter_(-1, arg, dm[..., None])
            dlog_D += routed[..., :T]
            routed_b = routed[..., T]
        di = dlog_D.sum(-2)                                             # log D_tj = .. + i~_j
        dF = dlog_D.sum(-1) - di                                        # F_t - F_j
        dm0 = None
        if ctx.has_state:
            dlog_b = dg * g if routed_b is None else dg * g + routed_b  # g = exp(b - m)
            dF = dF + dlog_b                                            # b = m_0 + F
            dm0 = dlog_b.sum(-1)
        dlog_f = dF.flip(-1).cumsum(-1).flip(-1)                        # F = cumsum log f
        df = dlog_f * torch.sigmoid(-f_pre) if ctx.forget_gate == "sigmoid" else dlog_f
        return dq, dk, dv, di, df, dC0, dn0, dm0, None, None, None


def _plus(a: Tensor | None, b: Tensor) -> Tensor:
    """a + b, where a None is zero."""
    return b if a is None else a + b


def parallel(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, f_pre: Tensor,
             state: State | None = None, *, forget_gate: str = "sigmoid",
             eps: float = 0.0, kernels=None) -> tuple[Tensor, State]:
    """All T steps at once: (h~ (*, T, d), final state); memory O(T^2) per head. Under a
    torch.func transform, the same numbers by the step loop (``recurrent``). ``kernels``: the
    compiled forward and backward (``lstmkit.engine.compiled.mlstm_parallel_kernel()``, for
    float32/float64 CPU tensors), else the torch ops here."""
    _check(q, k, v, i_pre, f_pre, state, forget_gate)
    if transformed():
        return recurrent(q, k, v, i_pre, f_pre, state, forget_gate=forget_gate, eps=eps)
    C0, n0, m0 = state if state is not None else (None, None, None)
    h, C, n, m = _Parallel.apply(q, k, v, i_pre, f_pre, C0, n0, m0, forget_gate, eps, kernels)
    return h, (C, n, m)


# ----------------------------------------------------------------------------------------------
# chunkwise form


def chunkwise(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, f_pre: Tensor,
              state: State | None = None, *, chunk_size: int = 64, forget_gate: str = "sigmoid",
              eps: float = 0.0, kernels=None) -> tuple[Tensor, State]:
    """Chunks of L = chunk_size steps: each chunk's own contribution to the state at its end
    (with a_c = F at the chunk's end, local cumsum F_j, log weights w_j = a_c - F_j + i~_j),

        K_c = sum_j exp(w_j - mu_c) v_j k_j^T,  kappa_c = sum_j exp(w_j - mu_c) k_j,  mu_c = max w
        m_{c+1} = max(a_c + m_c, mu_c),  C~_{c+1} = exp(a_c + m_c - m_{c+1}) C~_c
                                                  + exp(mu_c - m_{c+1}) K_c   (n~ alike),

    then every chunk at once by the parallel form from its entering state. A last chunk shorter
    than L (T not a multiple of L) runs the parallel form on its own. O(T L d) time.
    ``kernels`` as ``parallel`` takes them, for the chunks."""
    _check(q, k, v, i_pre, f_pre, state, forget_gate)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    batch, T, d = q.shape[:-2], q.shape[-2], q.shape[-1]
    L = chunk_size
    if transformed():               # torch.func: the step loop, as in parallel
        return recurrent(q, k, v, i_pre, f_pre, state, forget_gate=forget_gate, eps=eps)
    if T <= L:                      # one chunk: the parallel form itself
        return parallel(q, k, v, i_pre, f_pre, state, forget_gate=forget_gate, eps=eps,
                        kernels=kernels)
    NS = T // L
    outputs = []
    if NS:
        full = NS * L
        qc, kc, vc = (x[..., :full, :].unflatten(-2, (NS, L)) for x in (q, k, v))  # (*, NS, L, d)
        ic, fc = (x[..., :full].unflatten(-1, (NS, L)) for x in (i_pre, f_pre))     # (*, NS, L)
        F_ = log_forget(fc, forget_gate).cumsum(-1)
        a = F_[..., -1]                                                              # (*, NS)
        w_log = a[..., None] - F_ + ic
        # a chunk of padded steps only (i~ = -inf, see the layer's lengths) adds nothing: mu
        # kept finite so exp(w - mu) is 0, not nan, and exp(mu - m) is 0
        mu = w_log.amax(-1).clamp(min=torch.finfo(w_log.dtype).min)
        w = torch.exp(w_log - mu[..., None])
        K = (vc * w[..., None]).mT @ kc                                          # (*, NS, d, d)
        kappa = (kc * w[..., None]).sum(-2)                                         # (*, NS, d)
        if state is None:
            state = (q.new_zeros(*batch, d, d), q.new_zeros(*batch, d),
                     q.new_full(batch, -math.inf))
        C_in, n_in, m_in, *state = _ChunkStates.apply(a, mu, K, kappa, *state)
        h, *_ = _Parallel.apply(qc, kc, vc, ic, fc, C_in, n_in, m_in, forget_gate, eps,
                                kernels)
        outputs.append(h.flatten(-3, -2))
    if T > NS * L:
        h, state = parallel(q[..., NS * L:, :], k[..., NS * L:, :], v[..., NS * L:, :],
                            i_pre[..., NS * L:], f_pre[..., NS * L:], state,
                            forget_gate=forget_gate, eps=eps, kernels=kernels)
        outputs.append(h)
    return torch.cat(outputs, -2) if len(outputs) > 1 else outputs[0], state


class _ChunkStates(torch.autograd.Function):
    """The states entering each chunk and the last, from each chunk's own contribution
    (``chunkwise``): a, mu (*, NS), K (*, NS, d, d), kappa (*, NS, d), the state before the
    first chunk (C~_0, n~_0, m_0) (m_0 = -inf: none). Per chunk c,

        m' = max(a_c + m, mu_c),  e_c = exp(a_c + m - m'),  s_c = exp(mu_c - m')
        C~' = e_c C~ + s_c K_c,    n~' = e_c n~ + s_c kappa_c

    Returns (C_in (*, NS, d, d), n_in (*, NS, d), m_in (*, NS), C~_T, n~_T, m_T). The backward
    walks the chunks in reverse carrying dL/dC~, dL/dn~, dL/dm; m' sends its gradient to the
    larger of its two arguments."""

    @staticmethod
    def forward(ctx, a, mu, K, kappa, C, n, m):
        NS = a.shape[-1]
        C_in, n_in, m_in = C.new_empty(K.shape), n.new_empty(kappa.shape), m.new_empty(a.shape)
        e, s = torch.empty_like(a), torch.empty_like(a)
        for c in range(NS):
            C_in[..., c, :, :], n_in[..., c, :], m_in[..., c] = C, n, m
            m_next = torch.maximum(a[..., c] + m, mu[..., c])
            e[..., c] = torch.exp(a[..., c] + m - m_next)
            s[..., c] = torch.exp(mu[..., c] - m_next)
            C = e[..., c, None, None] * C + s[..., c, None, None] * K[..., c, :, :]
            n = e[..., c, None] * n + s[..., c, None] * kappa[..., c, :]
            m = m_next
        ctx.save_for_backward(a, mu, K, kappa, C_in, n_in, m_in, e, s)
        return C_in, n_in, m_in, C, n, m

    @staticmethod
    @once_differentiable
    def backward(ctx, dC_in, dn_in, dm_in, gC, gn, gm):
        a, mu, K, kappa, C_in, n_in, m_in, e, s = ctx.saved_tensors
        dK, dkappa = torch.empty_like(K), torch.empty_like(kappa)
        da, dmu = torch.empty_like(a), torch.empty_like(mu)
        for c in reversed(range(a.shape[-1])):       # gC, gn, gm: dL/d(the state after c)
            e_c, s_c = e[..., c], s[..., c]
            dK[..., c, :, :] = s_c[..., None, None] * gC
            dkappa[..., c, :] = s_c[..., None] * gn
            via_e = e_c * ((gC * C_in[..., c, :, :]).sum((-2, -1))
                           + (gn * n_in[..., c, :]).sum(-1))
            via_s = s_c * ((gC * K[..., c, :, :]).sum((-2, -1))
                           + (gn * kappa[..., c, :]).sum(-1))
            dm_next = gm - via_e - via_s                     # m' in e_c and s_c, and as itself
            first = a[..., c] + m_in[..., c] >= mu[..., c]   # m' = a_c + m there, else mu_c
            da[..., c] = via_e + torch.where(first, dm_next, 0.0)
            dmu[..., c] = via_s + torch.where(first, 0.0, dm_next)
            gC = e_c[..., None, None] * gC + dC_in[..., c, :, :]
            gn = e_c[..., None] * gn + dn_in[..., c, :]
            gm = da[..., c] + dm_in[..., c]
        return da, dmu, dK, dkappa, gC, gn, gm


# ----------------------------------------------------------------------------------------------
# checks


def _check(q, k, v, i_pre, f_pre, state, forget_gate) -> None:
    if forget_gate not in FORGET_GATES:
        raise ValueError(f"forget_gate: expected one of {FORGET_GATES}, got {forget_gate!r}")
    if q.dim() < 2 or q.shape[-2] < 1:
        raise ValueError(f"q: expected shape (*, T, d) with T >= 1, got {tuple(q.shape)}")
    for name, x in (("k", k), ("v", v)):
        if x.shape != q.shape:
            raise ValueError(f"{name}: expected the shape of q {tuple(q.shape)}, got "
                             f"{tuple(x.shape)}")
    for name, x in (("i_pre", i_pre), ("f_pre", f_pre)):
        if x.shape != q.shape[:-1]:
            raise ValueError(f"{name}: expected shape {tuple(q.shape[:-1])} (*, T), got "
                             f"{tuple(x.shape)}")
    if state is None:
        return
    if not isinstance(state, (tuple, list)) or len(state) != 3:
        got = f"{len(state)} tensors" if isinstance(state, (tuple, list)) else type(state).__name__
        raise ValueError(f"state: expected a tuple (C, n, m) of three tensors, got {got}")
    batch, d = q.shape[:-2], q.shape[-1]
    for name, x, shape in zip("Cnm", state, ((*batch, d, d), (*batch, d), tuple(batch))):
        if not isinstance(x, Tensor) or tuple(x.shape) != tuple(shape):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"state: expected {name} of shape {tuple(shape)}, got {got}")


register("mlstm", layer="lstmkit.layers.mlstm:mLSTM", states=("C", "n", "m"),
                  summary="xLSTM's mLSTM: matrix memory C_t = f_t C_{t-1} + i_t v_t k_t^T, "
                          "parallel in training")
# the mixed stack (lstmkit.layers.xlstm): mLSTM layers with sLSTM layers between them
register("xlstm", layer="lstmkit.layers.xlstm:xLSTM",
         states=("C", "n", "m", "h", "c", "n_s", "m_s"),
         summary="xLSTM stack: mLSTM layers with an sLSTM every second layer")
