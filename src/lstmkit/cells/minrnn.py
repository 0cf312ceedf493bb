"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates from x_t alone, so
the whole sequence is one linear recurrence h_t = a_t * h_{t-1} + b_t with a_t, b_t known up front.

    g(x) = x + 0.5 for x >= 0, sigma(x) otherwise          (so h~_t > 0)

    minGRU   z_t = sigma(W_z x_t + b_z)      h~_t = g(W_h x_t + b_h)
             h_t = (1 - z_t) * h_{t-1} + z_t * h~_t          a_t = 1 - z_t, b_t = z_t * h~_t
    minLSTM  f_t = sigma(W_f x_t + b_f)      i_t = sigma(W_i x_t + b_i)   h~_t = g(W_h x_t + b_h)
             f'_t = f_t / (f_t + i_t)        i'_t = i_t / (f_t + i_t)
             h_t = f'_t * h_{t-1} + i'_t * h~_t               a_t = f'_t, b_t = i'_t * h~_t

Gate layout of W_ih and b_ih: (W_z|W_h) for minGRU, (W_f|W_i|W_h) for minLSTM.

Two forms of the recurrence, held equal by the tests:
  parallel    log h_t = a*_t + logcumsumexp_{s<=t}(log b_s - a*_s), a*_t = sum_{s<=t} log a_s,
              from log a, log b taken stably from the pre-activations (``log_coefficients``).
              It runs chunkwise: the log-space scan inside chunks of ``chunk`` steps at once and
              h carried from chunk to chunk, so |a*_t| stays below ``chunk`` * max|log a| and
              float32 keeps its precision over any T.
  sequential  h_t = a_t * h_{t-1} + b_t, one step at a time (``coefficients``, ``step``).
Both have the same hand-written backward, the reverse linear recurrence of the adjoint
    lambda_t = dL/dh_t (from the output) + a_{t+1} * lambda_{t+1}
    dL/db_t = lambda_t     dL/da_t = lambda_t * h_{t-1}     dL/dh_0 = a_1 * lambda_1
walked step by step in linear space: a_t in (0, 1) keeps it bounded (no exp, no division), and on
CPU the loop is 40-70x faster than the signed log-space scan the same adjoint has as a parallel
form (benchmarks/bench_minrnn.py).

The initial state enters linearly, h_t = (prod_{s<=t} a_s) * h_0 + (the scan from h_0 = 0), and
both forms compute it so: h_0 may be any real number, zero or negative included (the paper's
log-space code folds log h_0 into the scan and so needs h_0 > 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

GATES = {"mingru": ("z", "h"), "minlstm": ("f", "i", "h")}
CHUNK = 64                  # steps per log-space chunk (precision: |a*| <= CHUNK * max|log a|)


# ---------------------------------------------------------------- gates: pre-activations -> a, b
def softplus(x: Tensor) -> Tensor:
    """log(1 + e^x). torch's default switches to x above 20, 2e-9 off: seen in float64."""
    return F.softplus(x, threshold=40.0)


def g(x: Tensor) -> Tensor:
    """g(x) = x + 0.5 for x >= 0, sigma(x) otherwise: continuous, positive, increasing."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """log g(x), without forming g: log(x + 0.5) for x >= 0, -softplus(-x) = log sigma(x)."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -softplus(-x))


def coefficients(kind: str, pre: Tensor) -> tuple[Tensor, Tensor]:
    """a_t, b_t of h_t = a_t * h_{t-1} + b_t from pre = W_ih x_t + b_ih (..., G*H) -> (..., H)."""
    if kind == "mingru":
        k, pre_h = pre.chunk(2, -1)
        z = torch.sigmoid(k)
        return torch.sigmoid(-k), z * g(pre_h)                   # 1 - z_t, z_t * h~_t
    pre_f, pre_i, pre_h = pre.chunk(3, -1)
    f, i = torch.sigmoid(pre_f), torch.sigmoid(pre_i)
    total = f + i
    return f / total, i / total * g(pre_h)                       # f'_t, i'_t * h~_t


def log_coefficients(kind: str, pre: Tensor) -> tuple[Tensor, Tensor]:
    """log a_t, log b_t from the pre-activations, without forming a gate that could round to 0:
    log z = -softplus(-k), log(1 - z) = -softplus(k); for minLSTM, with
    diff = softplus(-pre_f) - softplus(-pre_i) = log(i / f), log f' = -softplus(diff) and
    log i' = -softplus(-diff)."""
    if kind == "mingru":
        k, pre_h = pre.chunk(2, -1)
        return -softplus(k), -softplus(-k) + log_g(pre_h)
    pre_f, pre_i, pre_h = pre.chunk(3, -1)
    diff = softplus(-pre_f) - softplus(-pre_i)
    return -softplus(diff), -softplus(-diff) + log_g(pre_h)


def num_gates(kind: str) -> int:
    if kind not in GATES:
        raise ValueError(f"expected kind 'mingru' or 'minlstm', got {kind!r}")
    return len(GATES[kind])


# ---------------------------------------------------------------- the recurrence and its adjoint
def step(a_t: Tensor, b_t: Tensor, h_prev: Tensor) -> Tensor:
    """One step: h_t = a_t * h_{t-1} + b_t."""
    return torch.addcmul(b_t, a_t, h_prev)


def _adjoint(grad_h: Tensor, a: Tensor, h: Tensor, h0: Tensor | None):
    """The backward of h_t = a_t h_{t-1} + b_t over a sequence (T, B, H), each line mirroring
    one of the forward: lambda_t = dh_t + a_{t+1} lambda_{t+1}; returns (da, db, dh_0)."""
    lam = grad_h.clone(memory_format=torch.contiguous_format)   # (T, B, H): dh_t, then lambda_t
    for t in range(lam.shape[0] - 2, -1, -1):
        lam[t].addcmul_(a[t + 1], lam[t + 1])                    # lambda_t += a_{t+1} lambda_{t+1}
    h_prev = torch.cat([(h0 if h0 is not None else h.new_zeros(h[:1].shape[1:]))[None], h[:-1]])
    da = lam * h_prev                                            # dL/da_t = lambda_t h_{t-1}
    dh0 = a[0] * lam[0] if h0 is not None else None              # dL/dh_0 = a_1 lambda_1
    return da, lam, dh0                                          # dL/db_t = lambda_t


class _SequentialScan(torch.autograd.Function):
    """h = scan(a, b, h_0) one step at a time in linear space; the backward is ``_adjoint``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
        h = torch.empty_like(b)                                  # (T, B, H)
        if h0 is None:
            h[0] = b[0]
        else:
            torch.addcmul(b[0], a[0], h0, out=h[0])
        for t in range(1, b.shape[0]):
            torch.addcmul(b[t], a[t], h[t - 1], out=h[t])        # h_t = a_t h_{t-1} + b_t
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h, h0 = ctx.saved_tensors
        return _adjoint(grad_h, a, h, h0)


class _LogScan(torch.autograd.Function):
    """h = scan(exp(log a), exp(log b), h_0) as the chunkwise log-space parallel scan; the
    backward is ``_adjoint`` with d(log a) = a * dL/da and d(log b) = b * dL/db."""

    @staticmethod
    def forward(ctx, log_a: Tensor, log_b: Tensor, h0: Tensor | None, chunk: int) -> Tensor:
        T = log_a.shape[0]
        C = max(1, min(chunk, T))
        K = math.ceil(T / C)
        pad = K * C - T
        if pad:                             # a = 1, b = 0 past the end: h stays, then is cut
            log_a = torch.cat([log_a, log_a.new_zeros(pad, *log_a.shape[1:])])
            log_b = torch.cat([log_b, log_b.new_full((pad, *log_b.shape[1:]), -math.inf)])
        rest = log_a.shape[1:]
        a_star = log_a.view(K, C, *rest).cumsum(1)               # (K, C, B, H), from chunk start
        log_h = a_star + torch.logcumsumexp(log_b.view(K, C, *rest) - a_star, 1)
        h = log_h.exp_()                                         # each chunk's scan from h = 0
        decay = a_star.exp_()                                    # prod of a_s in the chunk to t
        start = h0
        for k in range(K):                  # carry: h_t += (prod a) * h at the chunk's start
            if start is not None:
                h[k].addcmul_(decay[k], start)
            start = h[k, -1]
        h = h.view(K * C, *rest)[:T]
        a, b = log_a[:T].exp(), log_b[:T].exp()
        ctx.save_for_backward(a, b, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, b, h, h0 = ctx.saved_tensors
        da, db, dh0 = _adjoint(grad_h, a, h, h0)
        return da.mul_(a), db.mul_(b), dh0, None


def parallel_scan(log_a: Tensor, log_b: Tensor, h0: Tensor | None = None,
                  chunk: int = CHUNK) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for t = 1..T from log a, log b (T, B, H) and h_0 (B, H) (any sign;
    None for zeros) by the log-space scan: returns h (T, B, H)."""
    return _LogScan.apply(log_a, log_b, h0, int(chunk))


def sequential_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for t = 1..T from a, b (T, B, H) and h_0 (B, H) (None for zeros),
    one step at a time: returns h (T, B, H)."""
    return _SequentialScan.apply(a, b, h0)


def reference_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """The plain loop, differentiated by autograd: what both scans are tested against."""
    h = torch.zeros_like(b[0]) if h0 is None else h0
    out = []
    for t in range(b.shape[0]):
        h = a[t] * h + b[t]
        out.append(h)
    return torch.stack(out)
