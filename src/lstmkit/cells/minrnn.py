"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates from x_t alone, so
the whole sequence is one linear recurrence h_t = a_t * h_{t-1} + b_t with a_t, b_t known up front.

    g(x) = x + 0.5 for x >= 0, sigma(x) otherwise          (so h~_t > 0)

    minGRU   z_t = sigma(W_z x_t + b_z)      h~_t = g(W_h x_t + b_h)
             h_t = (1 - z_t) * h_{t-1} + z_t * h~_t          a_t = 1 - z_t, b_t = z_t * h~_t
    minLSTM  f_t = sigma(W_f x_t + b_f)      i_t = sigma(W_i x_t + b_i)   h~_t = g(W_h x_t + b_h)
             f'_t = f_t / (f_t + i_t)        i'_t = i_t / (f_t + i_t)
             h_t = f'_t * h_{t-1} + i'_t * h~_t               a_t = f'_t, b_t = i'_t * h~_t

Gate layout of W_ih and b_ih: (W_z|W_h) for minGRU, (W_f|W_i|W_h) for minLSTM. Every gate is
taken from the pre-activations without a division or a subtraction that could round to 0 or 0/0:
1 - z_t = sigma(-k), and f'_t = sigma(u), i'_t = sigma(-u) with u = log f_t - log i_t.

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
walked step by step in linear space: a_t in (0, 1) keeps it bounded (no exp, no division); on
one CPU thread the loop took 1.3 ms where the signed log-space scan of the same adjoint took
91 ms, at (T, B, H) = (256, 8, 512). ``recurrence`` then takes dL/da, dL/db back to the
pre-activations by hand (``gates_backward``), so autograd sees one node per layer direction.

Compiled: on the CPU in float32 and float64, with lstmkit's extension built, the step loop runs as
one C++ op pair per layer direction (``lstmkit/engine/csrc/minrnn.cpp``): the forward computes the
gates, a_t, b_t and h_t in one pass over the pre-activations; the backward walks the adjoint and
the gates' backward in one reverse pass, recomputing the gates from the pre-activations, and
returns dL/dpre and dL/dh_0. The python step loop above stays the reference it is tested against
(``recurrence(..., compiled=False)``). Its backward is once differentiable (no create_graph).

The initial state enters linearly, h_t = (prod_{s<=t} a_s) * h_0 + (the scan from h_0 = 0), and
both forms compute it so: h_0 may be any real number, zero or negative included (the paper's
log-space code folds log h_0 into the scan and so needs h_0 > 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .base import transformed
from .registry import register

GATES = {"mingru": ("z", "h"), "minlstm": ("f", "i", "h")}
CHUNK = 64                  # steps per log-space chunk (precision: |a*| <= CHUNK * max|log a|)
sigmoid_backward = torch.ops.aten.sigmoid_backward        # (grad, y) -> grad * y * (1 - y)


def num_gates(kind: str) -> int:
    if kind not in GATES:
        raise ValueError(f"expected kind 'mingru' or 'minlstm', got {kind!r}")
    return len(GATES[kind])


# ---------------------------------------------------------------- the equations, for autograd
def g(x: Tensor) -> Tensor:
    """g(x) = x + 0.5 for x >= 0, sigma(x) otherwise: continuous, positive, increasing."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """log g(x), without forming g: log(x + 0.5) for x >= 0, log sigma(x) otherwise."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), F.logsigmoid(x))


def coefficients(kind: str, pre: Tensor) -> tuple[Tensor, Tensor]:
    """a_t, b_t of h_t = a_t * h_{t-1} + b_t from pre = W_ih x_t + b_ih (..., G*H) -> (..., H),
    differentiable by autograd: the reference ``recurrence`` is tested against."""
    if kind == "mingru":
        k, pre_h = pre.chunk(2, -1)
        return torch.sigmoid(-k), torch.sigmoid(k) * g(pre_h)    # 1 - z_t, z_t * h~_t
    pre_f, pre_i, pre_h = pre.chunk(3, -1)
    u = F.logsigmoid(pre_f) - F.logsigmoid(pre_i)                # log f_t - log i_t
    return torch.sigmoid(u), torch.sigmoid(-u) * g(pre_h)        # f'_t, i'_t * h~_t


def log_coefficients(kind: str, pre: Tensor) -> tuple[Tensor, Tensor]:
    """log a_t, log b_t from the pre-activations (the paper's log z = -softplus(-k),
    log(1 - z) = -softplus(k); log f' = -softplus(-u), log i' = -softplus(u) with
    u = log f - log i), differentiable by autograd."""
    if kind == "mingru":
        k, pre_h = pre.chunk(2, -1)
        return F.logsigmoid(-k), F.logsigmoid(k) + log_g(pre_h)
    pre_f, pre_i, pre_h = pre.chunk(3, -1)
    u = F.logsigmoid(pre_f) - F.logsigmoid(pre_i)
    return F.logsigmoid(u), F.logsigmoid(-u) + log_g(pre_h)


# ---------------------------------------------------------------- the gates by hand
def gates_forward(kind: str, pre: Tensor, log: bool, backward: bool = True):
    """(a, b, log a, log b, saved): the coefficients of every step from pre (T, B, G*H), their
    logs where ``log`` (else None), and, where ``backward``, what ``gates_backward`` needs."""
    if kind == "mingru":
        k, pre_h = pre.chunk(2, -1)
        z = torch.sigmoid(k)                                     # z_t
        s = torch.sigmoid(pre_h)
        positive = pre_h >= 0
        h_tilde = torch.where(positive, pre_h + 0.5, s)          # h~_t = g(pre_h)
        a, b = torch.sigmoid(-k), z * h_tilde                    # 1 - z_t, z_t h~_t
        logs = (F.logsigmoid(-k), F.logsigmoid(k) + log_g(pre_h)) if log else (None, None)
        if not backward:
            return a, b, *logs, None
        dg = torch.where(positive, 1.0, s * (1 - s))             # g'(pre_h)
        return a, b, *logs, (z, h_tilde, dg)
    pre_f, pre_i, pre_h = pre.chunk(3, -1)
    u = F.logsigmoid(pre_f) - F.logsigmoid(pre_i)                # log f_t - log i_t
    s = torch.sigmoid(pre_h)
    positive = pre_h >= 0
    h_tilde = torch.where(positive, pre_h + 0.5, s)
    a, i_prime = torch.sigmoid(u), torch.sigmoid(-u)             # f'_t, i'_t
    b = i_prime * h_tilde
    logs = (F.logsigmoid(u), F.logsigmoid(-u) + log_g(pre_h)) if log else (None, None)
    if not backward:
        return a, b, *logs, None
    dg = torch.where(positive, 1.0, s * (1 - s))
    # d log f / d pre_f = 1 - f = sigma(-pre_f), and the same for i
    return a, b, *logs, (a, i_prime, h_tilde, dg, torch.sigmoid(-pre_f), torch.sigmoid(-pre_i))


def gates_backward(kind: str, da: Tensor, db: Tensor, saved) -> Tensor:
    """dL/dpre (T, B, G*H) from dL/da, dL/db (T, B, H), each line mirroring one of
    ``gates_forward``."""
    H = da.shape[-1]
    dpre = da.new_empty(*da.shape[:-1], num_gates(kind) * H)
    if kind == "mingru":
        z, h_tilde, dg = saved
        dz = torch.addcmul(-da, db, h_tilde)                     # a = 1 - z, b = z h~
        sigmoid_backward.grad_input(dz, z, grad_input=dpre[..., :H])   # dk = dz z (1 - z)
        torch.mul(db * z, dg, out=dpre[..., H:])                 # dpre_h = db z g'
        return dpre
    a, i_prime, h_tilde, dg, not_f, not_i = saved
    du = torch.addcmul(da, db, h_tilde, value=-1) * a * i_prime  # a = sigma(u), i' = sigma(-u)
    torch.mul(du, not_f, out=dpre[..., :H])                      # u = log f - log i
    torch.mul(du, not_i, out=dpre[..., H:2 * H]).neg_()
    torch.mul(db * i_prime, dg, out=dpre[..., 2 * H:])           # b = i' h~
    return dpre


# ---------------------------------------------------------------- the recurrence and its adjoint
def step(a_t: Tensor, b_t: Tensor, h_prev: Tensor) -> Tensor:
    """One step: h_t = a_t * h_{t-1} + b_t."""
    return torch.addcmul(b_t, a_t, h_prev)


def _scan_steps(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    """h (T, B, H) one step at a time in linear space."""
    h = torch.empty_like(b)
    if h0 is None:
        h[0] = b[0]
    else:
        torch.addcmul(b[0], a[0], h0, out=h[0])
    for t in range(1, b.shape[0]):
        torch.addcmul(b[t], a[t], h[t - 1], out=h[t])            # h_t = a_t h_{t-1} + b_t
    return h


def _scan_log(log_a: Tensor, log_b: Tensor, h0: Tensor | None, chunk: int) -> Tensor:
    """h (T, B, H) by the log-space scan inside chunks of ``chunk`` steps, carried between."""
    T = log_a.shape[0]
    C = max(1, min(chunk, T))
    K = math.ceil(T / C)
    pad = K * C - T
    if pad:                                 # a = 1, b = 0 past the end: h stays, then is cut
        log_a = torch.cat([log_a, log_a.new_zeros(pad, *log_a.shape[1:])])
        log_b = torch.cat([log_b, log_b.new_full((pad, *log_b.shape[1:]), -math.inf)])
    rest = log_a.shape[1:]
    a_star = log_a.reshape(K, C, *rest).cumsum(1)                # (K, C, B, H), from chunk start
    log_h = a_star + torch.logcumsumexp(log_b.reshape(K, C, *rest) - a_star, 1)
    h = log_h.exp_()                                             # each chunk's scan from h = 0
    decay = a_star.exp_()                                        # prod of a_s in the chunk to t
    start = h0
    for k in range(K):                      # carry: h_t += (prod a) * h at the chunk's start
        if start is not None:
            h[k].addcmul_(decay[k], start)
        start = h[k, -1]
    return h.view(K * C, *rest)[:T]


def _adjoint(grad_h: Tensor, a: Tensor, h: Tensor, h0: Tensor | None):
    """The backward of h_t = a_t h_{t-1} + b_t over a sequence (T, B, H), each line mirroring
    one of the forward: lambda_t = dh_t + a_{t+1} lambda_{t+1}; returns (da, db, dh_0)."""
    lam = grad_h.clone(memory_format=torch.contiguous_format)   # (T, B, H): dh_t, then lambda_t
    for t in range(lam.shape[0] - 2, -1, -1):
        lam[t].addcmul_(a[t + 1], lam[t + 1])                    # lambda_t += a_{t+1} lambda_{t+1}
    da = torch.empty_like(lam)                                   # dL/da_t = lambda_t h_{t-1}
    torch.mul(lam[1:], h[:-1], out=da[1:])
    if h0 is None:
        da[0] = 0
    else:
        torch.mul(lam[0], h0, out=da[0])
    dh0 = a[0] * lam[0] if h0 is not None else None              # dL/dh_0 = a_1 lambda_1
    return da, lam, dh0                                          # dL/db_t = lambda_t


class _SequentialScan(torch.autograd.Function):
    """h = scan(a, b, h_0) one step at a time; the backward is ``_adjoint``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
        h = _scan_steps(a, b, h0)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h, h0 = ctx.saved_tensors
        return _adjoint(grad_h, a, h, h0)


class _LogScan(torch.autograd.Function):
    """h = scan(exp(log a), exp(log b), h_0) by the chunkwise log-space scan; the backward is
    ``_adjoint`` with d(log a) = a * dL/da and d(log b) = b * dL/db."""

    @staticmethod
    def forward(ctx, log_a: Tensor, log_b: Tensor, h0: Tensor | None, chunk: int) -> Tensor:
        h = _scan_log(log_a, log_b, h0, chunk)
        ctx.save_for_backward(log_a.exp(), log_b.exp(), h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, b, h, h0 = ctx.saved_tensors
        da, db, dh0 = _adjoint(grad_h, a, h, h0)
        return da.mul_(a), db.mul_(b), dh0, None


# ---------------------------------------------------------------- the step loop in C++
KIND_IDS = {"mingru": 0, "minlstm": 1}                   # csrc/minrnn.cpp's kinds


# The compiled extension's loader and its build error, registered by lstmkit.engine.compiled
# when it is imported (the cells sit below the engine); unset, the python loop runs.
extension_loader = None
extension_error = None


def _extension():
    """The compiled extension (csrc/minrnn.cpp's ops), built now if it was not; None without
    one."""
    return None if extension_loader is None else extension_loader()


def compiled_unsupported(pre: Tensor, h0: Tensor | None) -> str | None:
    """Why the C++ step loop cannot run on pre (T, B, G*H) and h0 (None if it can)."""
    if (torch.jit.is_tracing() or torch.compiler.is_compiling() or type(pre) is not Tensor
            or torch._C._functorch.is_functorch_wrapped_tensor(pre)):
        # tracing, torch.compile, torch.export (fake tensors), torch.func: they follow the
        # python loop's torch ops, not an opaque extension call
        return "the compiled minGRU/minLSTM loop runs on plain tensors, not traced or transformed"
    if pre.device.type != "cpu":
        return f"the compiled minGRU/minLSTM loop runs on the CPU, got pre on {pre.device}"
    if pre.dtype not in (torch.float32, torch.float64):
        return f"the compiled minGRU/minLSTM loop runs float32 and float64, got {pre.dtype}"
    if h0 is not None and (h0.dtype != pre.dtype or h0.device != pre.device):
        return (f"the compiled minGRU/minLSTM loop needs h0 of pre's dtype and device "
                f"({pre.dtype}, {pre.device}), got {h0.dtype} on {h0.device}")
    if _extension() is None:
        error = ((extension_error and extension_error()) or "not built").strip().splitlines() \
            or ["not built"]
        return f"lstmkit's compiled extension is unavailable ({error[0][:300]})"
    return None


class _CompiledRecurrence(torch.autograd.Function):
    """h from the pre-activations by csrc/minrnn.cpp: one fused forward op and one backward op
    (the adjoint and the gates' backward), the gates recomputed there from pre."""

    @staticmethod
    def forward(ctx, pre: Tensor, h0: Tensor | None, kind: str) -> Tensor:
        h = _extension().minrnn_forward(KIND_IDS[kind], pre, h0)
        ctx.kind = kind
        ctx.save_for_backward(pre, h0, h)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: Tensor):
        pre, h0, h = ctx.saved_tensors
        dpre, dh0 = _extension().minrnn_backward(KIND_IDS[ctx.kind], pre, h0, h, grad_h)
        return dpre, (dh0 if h0 is not None else None), None


class _Recurrence(torch.autograd.Function):
    """h from the pre-activations: ``gates_forward``, a scan, and both backward by hand."""

    @staticmethod
    def forward(ctx, pre: Tensor, h0: Tensor | None, kind: str, parallel: bool,
                chunk: int) -> Tensor:
        a, b, log_a, log_b, saved = gates_forward(kind, pre, log=parallel)
        h = _scan_log(log_a, log_b, h0, chunk) if parallel else _scan_steps(a, b, h0)
        ctx.kind = kind
        ctx.save_for_backward(a, h, h0, *saved)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h, h0, *saved = ctx.saved_tensors
        da, db, dh0 = _adjoint(grad_h, a, h, h0)
        return gates_backward(ctx.kind, da, db, saved), dh0, None, None, None


def recurrence(kind: str, pre: Tensor, h0: Tensor | None = None, parallel: bool = False,
               chunk: int = CHUNK, compiled: bool | None = None) -> Tensor:
    """h (T, B, H) of a minGRU (kind "mingru") or minLSTM ("minlstm") layer direction from its
    pre-activations pre = W_ih x + b_ih (T, B, G*H) and h_0 (B, H) (any sign; None for zeros):
    the log-space scan where ``parallel``, else the step loop. bfloat16 and float16 run in
    float32 (T steps of rounding to 8 bits would pile up), the result in pre's dtype.

    ``compiled`` (the step loop only): None runs it in C++ where it can (CPU, float32/float64,
    the extension built; ``compiled_unsupported``), else in python; True requires C++ (a
    ValueError says why it cannot run); False runs the python loop, the reference."""
    num_gates(kind)
    if compiled is not None and not isinstance(compiled, bool):
        raise TypeError(f"compiled must be None, True or False, got {compiled!r}")
    if parallel and compiled:
        raise ValueError("compiled=True runs the step loop; parallel=True asks for the log-space "
                         "scan (pass one of them)")
    if pre.dtype in (torch.bfloat16, torch.float16):
        h0 = None if h0 is None else h0.float()
        return recurrence(kind, pre.float(), h0, parallel, chunk, compiled).to(pre.dtype)
    if transformed():
        # torch.func transforms (vmap, grad, jacrev, ...) cannot run the hand-written backward
        # (an autograd.Function) nor the loops' out= products: the plain loop, by autograd
        if compiled:
            raise ValueError("recurrence(compiled=True) does not run under torch.func transforms")
        return reference_scan(*coefficients(kind, pre), h0)
    if not parallel and compiled is not False:
        reason = compiled_unsupported(pre, h0)
        if reason is None:
            if torch.is_grad_enabled() and (pre.requires_grad or
                                            (h0 is not None and h0.requires_grad)):
                return _CompiledRecurrence.apply(pre, h0, kind)
            return _extension().minrnn_forward(KIND_IDS[kind], pre, h0)
        if compiled:
            raise ValueError(f"recurrence(compiled=True): {reason}")
    if torch.is_grad_enabled() and (pre.requires_grad or (h0 is not None and h0.requires_grad)):
        return _Recurrence.apply(pre, h0, kind, bool(parallel), int(chunk))
    a, b, log_a, log_b, _ = gates_forward(kind, pre, parallel, backward=False)  # inference
    return _scan_log(log_a, log_b, h0, int(chunk)) if parallel else _scan_steps(a, b, h0)


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


register("mingru", layer="lstmkit.layers.minrnn:minGRU", states=("h",),
                  summary="minGRU: h_t = (1 - z_t) h_{t-1} + z_t h~_t, gates from x_t only")
register("minlstm", layer="lstmkit.layers.minrnn:minLSTM", states=("h",),
                  summary="minLSTM: h_t = f'_t h_{t-1} + i'_t h~_t, gates from x_t only")
