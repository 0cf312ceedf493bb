"""mLSTM: the three forms agree (outputs and final states), the parallel form's hand-written
backward against gradcheck and autograd through the step loop, xLSTM's own backends, the layer."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

import lstmkit
from lstmkit.cells import mlstm as M
from lstmkit.layers import mlstm as mlstm_layer

F64 = torch.float64
B, NH, D_HEAD = 2, 2, 4


def _inputs(T, state=False, scale=1.0, dtype=F64, seed=0, d=D_HEAD, batch=(B, NH)):
    g = torch.Generator().manual_seed(seed)
    B, NH = batch
    q, k, v = (torch.randn(B, NH, T, d, generator=g, dtype=dtype) for _ in range(3))
    i_pre, f_pre = (scale * torch.randn(B, NH, T, generator=g, dtype=dtype) for _ in range(2))
    st = None
    if state:
        st = (torch.randn(B, NH, d, d, generator=g, dtype=dtype),
              torch.randn(B, NH, d, generator=g, dtype=dtype),
              torch.randn(B, NH, generator=g, dtype=dtype))
    return q, k, v, i_pre, f_pre, st


def _forms(chunk_size):
    return {"parallel": M.parallel, "recurrent": M.recurrent,
            "chunkwise": lambda *a, **kw: M.chunkwise(*a, chunk_size=chunk_size, **kw)}


def _close(a, b, tol):
    """max |a - b| <= tol, relative to b's largest entry where that exceeds 1."""
    assert a.shape == b.shape
    err = (a - b).abs().max().item() / max(1.0, b.abs().max().item())
    assert err <= tol, err


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("T", [1, 7, 64, 100])
def test_forms_agree(T, state, forget_gate):
    q, k, v, i_pre, f_pre, st = _inputs(T, state)
    if forget_gate == "exp":
        f_pre = f_pre - 2.0                 # log f < 0 mostly: a memory that decays
    kw = {"forget_gate": forget_gate}
    h_r, s_r = M.recurrent(q, k, v, i_pre, f_pre, st, **kw)
    h_p, s_p = M.parallel(q, k, v, i_pre, f_pre, st, **kw)
    results = [(h_p, s_p)] + [M.chunkwise(q, k, v, i_pre, f_pre, st, chunk_size=c, **kw)
                              for c in (1, 16, 64)]
    assert h_r.abs().max() > 0.1          # not a comparison of zeros
    for h, s in results:
        _close(h, h_r, 1e-10)
        for a, b in zip(s, s_r):
            _close(a, b, 1e-10)


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_split_sequence_carries_state(form):
    """Two calls with the state carried equal one call, outputs and gradients."""
    fn = _forms(4)[form]
    q, k, v, i_pre, f_pre, st = _inputs(23, state=True)
    leaves = [q, k, v, i_pre, f_pre, *st]
    for x in leaves:
        x.requires_grad_(True)
    h, s = fn(q, k, v, i_pre, f_pre, st)
    cut = lambda x, a, b: x[..., a:b, :] if x.dim() == 4 else x[..., a:b]  # noqa: E731
    parts = [cut(x, 0, 9) for x in (q, k, v, i_pre, f_pre)]
    h1, s1 = fn(*parts, st)
    h2, s2 = fn(*[cut(x, 9, 23) for x in (q, k, v, i_pre, f_pre)], s1)
    _close(torch.cat([h1, h2], -2), h, 1e-10)
    for a, b in zip(s2, s):
        _close(a, b, 1e-10)
    # a loss on h and on the final state's true scale exp(m) C~ (what the next call sees)
    loss = lambda h, s: (h.sin().sum() + (s[0] * s[2].exp()[..., None, None]).sum())  # noqa
    whole = torch.autograd.grad(loss(h, s), leaves)
    split = torch.autograd.grad(loss(torch.cat([h1, h2], -2), s2), leaves)
    for a, b in zip(whole, split):
        _close(a, b, 1e-9)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("form", ["parallel", "chunkwise"])
def test_gradcheck(form, state, eps, forget_gate):
    """Every output (h~ and the final C~, n~, m) against finite differences, m's argmax path
    included (it matters for the final state's scale and for eps > 0)."""
    q, k, v, i_pre, f_pre, st = _inputs(5, state, d=3, batch=(1, 2))
    leaves = [q, k, v, i_pre, f_pre, *(st or ())]
    for x in leaves:
        x.requires_grad_(True)
    fn = _forms(2)[form]
    # the full Jacobian once, random projections of it (gradcheck's fast mode) elsewhere
    full = form == "parallel" and state and eps == 0 and forget_gate == "sigmoid"

    def outputs(*a):
        h, s = fn(*a[:5], tuple(a[5:]) if state else None, forget_gate=forget_gate, eps=eps)
        return (h, *s)

    assert torch.autograd.gradcheck(outputs, leaves, fast_mode=not full)


def test_second_derivative_of_parallel_raises():
    q, k, v, i_pre, f_pre, _ = _inputs(3)
    q.requires_grad_(True)
    h, _ = M.parallel(q, k, v, i_pre, f_pre)
    (g,) = torch.autograd.grad(h.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        g.sum().backward()


def test_recurrent_gradcheck():
    """The step loop is differentiable through its state (no in-place update)."""
    q, k, v, i_pre, f_pre, st = _inputs(3, True, d=2, batch=(1, 1))
    leaves = [q, k, v, i_pre, f_pre, *st]
    for x in leaves:
        x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda *a: (lambda h, s: (h, *s))(*M.recurrent(*a[:5], tuple(a[5:]))), leaves)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("state", [False, True])
def test_backward_matches_autograd_through_steps(state, forget_gate):
    q, k, v, i_pre, f_pre, st = _inputs(20, state, seed=3)
    if forget_gate == "exp":
        f_pre = f_pre - 2.0
    leaves = [q, k, v, i_pre, f_pre, *(st or ())]
    for x in leaves:
        x.requires_grad_(True)
    g = torch.Generator().manual_seed(9)
    grads = {}
    for name, fn in (("parallel", M.parallel), ("recurrent", M.recurrent),
                     ("chunkwise", lambda *a, **kw: M.chunkwise(*a, chunk_size=6, **kw))):
        h, s = fn(q, k, v, i_pre, f_pre, st, forget_gate=forget_gate)
        outs = (h, *s)
        g.manual_seed(9)
        cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in outs]
        grads[name] = torch.autograd.grad(outs, leaves, cot)
    for a, b, c in zip(grads["parallel"], grads["recurrent"], grads["chunkwise"]):
        assert b.abs().max() > 0
        _close(a, b, 1e-9)
        _close(c, b, 1e-9)


def test_large_gate_preactivations_stay_finite():
    """Gate pre-activations of 1e4 would overflow exp() without the stabiliser m."""
    for dtype in (torch.float32, F64):
        q, k, v, i_pre, f_pre, st = _inputs(40, True, scale=1e4, dtype=dtype, seed=5)
        leaves = [q, k, v, i_pre, f_pre, *st]
        for x in leaves:
            x.requires_grad_(True)
        for form, fn in _forms(16).items():
            for s in (None, st):
                h, (C, n, m) = fn(q, k, v, i_pre, f_pre, s)
                outs = [h, C, n]
                assert all(torch.isfinite(o).all() for o in outs), (form, dtype)
                grads = torch.autograd.grad(sum(o.sum() for o in outs), leaves,
                                            allow_unused=True)
                assert all(gr is None or torch.isfinite(gr).all() for gr in grads), (form, dtype)


# ---------------------------------------------------------------------------------------------
# xLSTM's own backends (NX-AI/xlstm, the pure-PyTorch ones)


def _package_recurrent(P, q, k, v, i_pre, f_pre, eps):
    """The package's step over T from its layer's zero state (C, n, m = 0)."""
    Bq, NHq, T, d = q.shape
    C = q.new_zeros(Bq, NHq, d, d)
    n = q.new_zeros(Bq, NHq, d, 1)
    m = q.new_zeros(Bq, NHq, 1, 1)
    hs = []
    for t in range(T):           # its step squeezes q, k, v in place: hand it copies
        h, (C, n, m) = P.recurrent_step_stabilized_simple(
            C, n, m, q[:, :, t:t + 1].clone(), k[:, :, t:t + 1].clone(),
            v[:, :, t:t + 1].clone(), i_pre[:, :, t, None, None], f_pre[:, :, t, None, None],
            eps=eps)
        hs.append(h)
    return torch.cat(hs, 2), (C, n, m)


@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_agrees_with_xlstm_package(eps):
    """Conventions: the package scales keys by 1/sqrt(d) inside (lstmkit's k comes scaled), its
    gate pre-activations are (B, NH, S, 1) in the parallel form, its C is ours transposed
    (C = k v^T, h = q^T C) and its chunkwise form scales q instead of k, so that form's C and n
    are sqrt(d) times its step's. Its step and chunkwise start from m = 0 where its parallel form
    has none: with eps > 0 that changes h by eps * exp(m); lstmkit's forms share the parallel
    form's m, and given the state (0, 0, 0) they share the others'."""
    P = pytest.importorskip("xlstm.blocks.mlstm.backends")
    T, d = 64, D_HEAD
    q, k, v, i_pre, f_pre, _ = _inputs(T, seed=11)
    f_pre = f_pre + 2.0
    k_ours = k / math.sqrt(d)
    h_par = P.parallel_stabilized_simple(q, k, v, i_pre[..., None], f_pre[..., None], eps=eps)
    h_chk, (C_chk, n_chk, m_chk) = P.chunkwise_simple(q, k, v, i_pre, f_pre, chunk_size=16,
                                                      return_last_state=True, eps=eps)
    h_rec, (C_rec, n_rec, m_rec) = _package_recurrent(P, q, k, v, i_pre, f_pre, eps)
    zero = (q.new_zeros(B, NH, d, d), q.new_zeros(B, NH, d), q.new_zeros(B, NH))
    for fn in _forms(16).values():
        h, _ = fn(q, k_ours, v, i_pre, f_pre, eps=eps)
        _close(h, h_par, 1e-10)
        h0, (C, n, m) = fn(q, k_ours, v, i_pre, f_pre, zero, eps=eps)
        _close(h0, h_rec, 1e-10)
        _close(h0, h_chk, 1e-10)
        _close(C, C_rec.mT, 1e-10)
        _close(n, n_rec[..., 0], 1e-10)
        _close(m, m_rec[..., 0, 0], 1e-12)
        _close(C * math.sqrt(d), C_chk.mT, 1e-10)
        _close(n * math.sqrt(d), n_chk, 1e-10)
        _close(m, m_chk.reshape(B, NH), 1e-12)
    gap = (h_par - h_rec).abs().max().item()
    assert (gap < 1e-12) if eps == 0 else (1e-9 < gap < 1e-5), gap   # the package's own gap


# ---------------------------------------------------------------------------------------------
# the layer


def _layer(**kw):
    torch.manual_seed(0)
    args = {"input_size": 3, "hidden_size": 4, "num_heads": 2, "dtype": F64} | kw
    return lstmkit.mLSTM(**args)


def test_parameter_names_shapes_and_init():
    m = lstmkit.mLSTM(3, 8, num_heads=4, num_layers=2, bidirectional=True)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert len(shapes) == 2 * 2 * 13
    assert shapes["weight_norm_l1_reverse"] == (8,) and torch.equal(m.weight_norm_l0,
                                                                    torch.ones(8))
    assert shapes["weight_q_l0"] == (8, 3) and shapes["weight_i_l0_reverse"] == (4, 3)
    assert shapes["weight_o_l1"] == (8, 16) and shapes["bias_f_l1_reverse"] == (4,)
    assert torch.allclose(m.bias_f_l0, torch.linspace(3, 6, 4))
    e = lstmkit.mLSTM(3, 8, num_heads=4, forget_gate="exp")
    assert torch.allclose(e.bias_f_l0.exp(), torch.sigmoid(torch.linspace(3, 6, 4)))
    assert {n for n, _ in lstmkit.mLSTM(3, 8, bias=False, head_norm=False).named_parameters()} \
        == {f"weight_{p}_l0" for p in "qkvifo"}


def test_layer_matches_hand_written_equations():
    """One layer, one head group, against the paper's unstabilised equations (h = o * h~: no
    head norm, which tests/test_mlstm_trace.py checks)."""
    m = _layer(mode="parallel", head_norm=False)
    x = torch.randn(6, 2, 3, dtype=F64)
    y, _ = m(x)
    d, Hd = 2, 4
    C = torch.zeros(2, NH, d, d, dtype=F64)
    n = torch.zeros(2, NH, d, dtype=F64)
    for t in range(6):
        proj = lambda p: x[t] @ getattr(m, f"weight_{p}_l0").T + getattr(m, f"bias_{p}_l0")  # noqa
        q, k, v = (proj(p).reshape(2, NH, d) for p in "qkv")
        k = k / math.sqrt(d)
        i, f = proj("i").exp(), torch.sigmoid(proj("f"))
        C = f[..., None, None] * C + i[..., None, None] * v[..., :, None] * k[..., None, :]
        n = f[..., None] * n + i[..., None] * k
        h = (C @ q[..., None])[..., 0] / (n * q).sum(-1).abs().clamp_min(1)[..., None]
        _close(y[t], torch.sigmoid(proj("o")) * h.reshape(2, Hd), 1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_modes_agree_and_state_carries(bidirectional):
    m = _layer(num_layers=2, bidirectional=bidirectional, chunk_size=3)
    x = torch.randn(10, 2, 3, dtype=F64)
    results = {}
    for mode in ("parallel", "chunkwise", "recurrent", "auto"):
        m.mode = mode
        results[mode] = m(x)
    for mode in ("chunkwise", "recurrent", "auto"):
        _close(results[mode][0], results["parallel"][0], 1e-12)
        for a, b in zip(results[mode][1], results["parallel"][1]):
            _close(a, b, 1e-12)
    if not bidirectional:          # truncated BPTT: the second half from the first's state
        m.mode = "auto"
        y1, s1 = m(x[:4])
        y2, s2 = m(x[4:], s1)
        _close(torch.cat([y1, y2]), results["parallel"][0], 1e-12)
        y3, _ = m(x[4:5], s1)                       # one step (recurrent step, auto)
        _close(y3, y2[:1], 1e-12)


def test_layer_batch_first_and_unbatched():
    m = _layer(batch_first=True)
    x = torch.randn(2, 5, 3, dtype=F64)
    y, (C, n, mm) = m(x)
    assert y.shape == (2, 5, 4) and C.shape == (1, 2, NH, 2, 2) and mm.shape == (1, 2, NH)
    y0, s0 = m(x[0])
    assert y0.shape == (5, 4) and s0[0].shape == (1, NH, 2, 2)
    _close(y0, y[0], 1e-14)
    y1, _ = m(x[1, 3:], m(x[1, :3])[1])         # an unbatched state carried
    _close(y1, y[1, 3:], 1e-12)


def test_inference_reuses_stacked_weights_until_they_change():
    m = _layer(head_norm=False)                             # h linear in v
    x = torch.randn(3, 2, 3, dtype=F64)
    with torch.no_grad():
        before = m(x)[0]
        m.weight_v_l0.mul_(2.0)                             # in place: a new version
        after = m(x)[0]
        m.load_state_dict({k: v * 0.5 if k == "weight_v_l0" else v
                           for k, v in m.state_dict().items()})
        again = m(x)[0]
        m.weight_v_l0 = torch.nn.Parameter(m.weight_v_l0 * 3.0)         # a new parameter
        third = m(x)[0]
        m.weight_v_l0 = torch.nn.Parameter(m.weight_v_l0 / 3.0)
    _close(third, 3 * before, 1e-12)
    _close(after, 2 * before, 1e-12)                    # h is linear in v
    _close(again, before, 1e-12)
    _close(m(x)[0], before, 1e-12)                      # and the autograd path agrees


def test_layer_gradcheck():
    m = _layer(num_layers=2, bidirectional=True, mode="parallel")
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]
    x = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    C = torch.randn(4, 2, NH, 2, 2, dtype=F64, requires_grad=True)
    n = torch.randn(4, 2, NH, 2, dtype=F64, requires_grad=True)
    mm = torch.randn(4, 2, NH, dtype=F64, requires_grad=True)

    def fn(x, C, n, mm, *ps):
        y, s = functional_call(m, dict(zip(names, ps)), (x, (C, n, mm)))
        return (y, *s)

    assert torch.autograd.gradcheck(fn, (x, C, n, mm, *params), fast_mode=True)


def test_layer_dropout_between_layers():
    m = _layer(num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 3, dtype=F64)
    m.eval()
    a, b = m(x)[0], m(x)[0]
    _close(a, b, 0)
    m.train()
    assert (m(x)[0] - a).abs().max() > 1e-6


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads"):
        lstmkit.mLSTM(3, 10, num_heads=4)
    with pytest.raises(ValueError, match="num_heads"):
        lstmkit.mLSTM(3, 10, num_heads=0)
    with pytest.raises(ValueError, match="mode"):
        lstmkit.mLSTM(3, 4, mode="fast")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            lstmkit.mLSTM(3, 4, chunk_size=bad)
    with pytest.raises(ValueError, match="forget_gate"):
        lstmkit.mLSTM(3, 4, forget_gate="tanh")
    q, k, v, i_pre, f_pre, _ = _inputs(4)
    with pytest.raises(ValueError, match="chunk_size"):
        M.chunkwise(q, k, v, i_pre, f_pre, chunk_size=0)
    with pytest.raises(ValueError, match="forget_gate"):
        M.parallel(q, k, v, i_pre, f_pre, forget_gate="relu")
    with pytest.raises(ValueError, match="i_pre"):
        M.parallel(q, k, v, i_pre[..., None], f_pre)


def test_bad_state():
    m = _layer(num_layers=2)
    x = torch.randn(5, 2, 3, dtype=F64)
    _, (C, n, mm) = m(x)
    with pytest.raises(ValueError, match="three tensors"):
        m(x, (C, n))
    with pytest.raises(ValueError, match="three tensors"):
        m(x, C)
    with pytest.raises(ValueError, match=r"state's C of shape \(2, 2, 2, 2, 2\)"):
        m(x, (C[:1], n, mm))
    with pytest.raises(ValueError, match="state's m"):
        m(x, (C, n, mm[..., None]))
    with pytest.raises(TypeError, match="state's n"):
        m(x, (C, None, mm))
    with pytest.raises(ValueError, match="input_size"):
        m(torch.randn(5, 2, 4, dtype=F64))
    q, k, v, i_pre, f_pre, st = _inputs(4, True)
    with pytest.raises(ValueError, match="state: expected n"):
        M.recurrent(q, k, v, i_pre, f_pre, (st[0], st[1][..., :1], st[2]))


# ---------------------------------------------------------------------------------------------
# lengths: a right-padded batch against each sequence alone


def _final_loss(y, s):
    """A loss on the output and on the final state at its true scale exp(m) C~, exp(m) n~."""
    C, n, m = s
    return ((y * y.cos()).sum() + (C * m.exp()[..., None, None]).sin().sum()
            + (n * m.exp()[..., None]).sum())


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("mode", ["parallel", "chunkwise", "recurrent"])
def test_lengths_equal_each_sequence_alone(mode, forget_gate):
    m = _layer(num_layers=2, bidirectional=True, mode=mode, chunk_size=2,
               forget_gate=forget_gate)
    lengths = torch.tensor([3, 7, 1, 5])                # unsorted; chunks of padding only
    N, L = len(lengths), 7
    x = torch.randn(L, N, 3, dtype=F64, requires_grad=True)
    state = tuple(torch.randn(4, N, NH, *tail, dtype=F64, requires_grad=True)
                  for tail in ((2, 2), (2,), ()))
    y, s = m(x, state, lengths=lengths)
    for b, length in enumerate(lengths.tolist()):       # outputs zero past each length
        assert (y[length:, b] == 0).all() and (y[:length, b] != 0).all()
    grads = torch.autograd.grad(_final_loss(y, s), [x, *state, *m.parameters()])
    assert all(torch.isfinite(g).all() for g in grads)
    expected = [torch.zeros_like(g) for g in grads]
    for b, length in enumerate(lengths.tolist()):
        xb = x[:length, b:b + 1]
        sb = tuple(z[:, b:b + 1] for z in state)
        yb, fb = m(xb, sb)
        _close(y[:length, b:b + 1], yb, 1e-12)
        for got, want in zip(s, fb):
            _close(got[:, b:b + 1], want, 1e-12)
        gb = torch.autograd.grad(_final_loss(yb, fb), [x, *state, *m.parameters()],
                                 allow_unused=True)
        expected = [e + (0 if g is None else g) for e, g in zip(expected, gb)]
    for got, want in zip(grads, expected):
        _close(got, want, 1e-10)


def test_lengths_without_state_and_auto_mode():
    """No initial state (m_0 = -inf) and the identity steps at once: still the sequence alone;
    lengths all L is the plain call."""
    m = _layer(bidirectional=True, chunk_size=2)
    x = torch.randn(6, 3, 3, dtype=F64)
    for mode in ("auto", "parallel", "chunkwise", "recurrent"):
        m.mode = mode
        y, s = m(x, lengths=torch.tensor([6, 2, 4]))
        yb, sb = m(x[:2, 1:2])
        _close(y[:2, 1:2], yb, 1e-12)
        for a, b in zip(s, sb):
            _close(a[:, 1:2], b, 1e-12)
        full = m(x, lengths=[6, 6, 6])
        _close(full[0], m(x)[0], 0)
    m = _layer(batch_first=True)
    y, _ = m(x.transpose(0, 1), lengths=torch.tensor([6, 2, 4]))
    _close(y[1], m(x[:2, 1])[0].new_zeros(6, 4).index_copy(0, torch.arange(2),
                                                              m(x[:2, 1])[0]), 1e-12)


def test_parallel_gradcheck_with_identity_steps():
    """The hand-written backward where padded steps hold i~ = -inf, f~ = +inf: no nan, and
    gradcheck (the padding is built inside, so only valid entries are perturbed)."""
    q, k, v, i_pre, f_pre, st = _inputs(5, state=True)
    pad = torch.arange(5) >= torch.tensor([[5], [2]])[..., None]          # (B, 1, T)
    pad = pad.expand(B, NH, 5)
    leaves = [x.requires_grad_(True) for x in (q, k, v, i_pre, f_pre, *st)]

    def fn(q, k, v, i_pre, f_pre, C, n, m):
        i_pre = i_pre.masked_fill(pad, -math.inf)
        f_pre = f_pre.masked_fill(pad, math.inf)
        out = []
        for form in ("parallel", "chunkwise"):
            h, s = _forms(2)[form](q, k, v, i_pre, f_pre, (C, n, m))
            out += [h, *s]
        return tuple(out)

    out = fn(*leaves)
    torch.autograd.backward([o.sum() for o in out])
    assert all(torch.isfinite(x.grad).all() for x in leaves)
    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)


def test_bad_lengths():
    m = _layer()
    x = torch.randn(5, 2, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"lengths of shape \(2,\)"):
        m(x, lengths=torch.tensor([5]))
    with pytest.raises(ValueError, match="between 1 and"):
        m(x, lengths=torch.tensor([6, 2]))
    with pytest.raises(ValueError, match="between 1 and"):
        m(x, lengths=torch.tensor([0, 2]))
    with pytest.raises(TypeError, match="integer lengths"):
        m(x, lengths=torch.tensor([5.0, 2.0]))
    with pytest.raises(ValueError, match="batched"):
        m(x[:, 0], lengths=torch.tensor([5]))


# ---------------------------------------------------------------------------------------------
# the compiled inference step (csrc/mlstm.cpp)

compiled = pytest.importorskip("lstmkit.engine.compiled")
needs_compiled = pytest.mark.skipif(not compiled.available(),
                                    reason="the compiled engine is not built here")


@needs_compiled
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_compiled_step_equals_python_step(forget_gate, eps):
    kw = {"forget_gate": forget_gate, "eps": eps}
    for dtype, tol in ((F64, 1e-12), (torch.float32, 2e-6)):
        q, k, v, i_pre, f_pre, st = _inputs(3, state=True, dtype=dtype, d=5, batch=(3, 2))
        i_pre[0, 0, 1], f_pre[0, 0, 1] = -math.inf, math.inf if forget_gate == "sigmoid" else 0
        i_pre[1, 1, 2] = 30.0                                      # a large i~: m from it
        for state in (None, st):
            for t in range(3):
                args = (q[..., t, :], k[..., t, :], v[..., t, :], i_pre[..., t], f_pre[..., t])
                h, s = compiled.mlstm_step(*args, state, **kw)
                h_ref, s_ref = M.step(*args, state, **kw)
                assert h.dtype == dtype and h.shape == h_ref.shape
                _close(h, h_ref, tol)
                for a, b in zip(s, s_ref):
                    assert a.shape == b.shape
                    _close(a, b, tol)
                state = s
        args = (q[..., 1, :], k[..., 1, :], v[..., 1, :], i_pre[..., 1], f_pre[..., 1])
        _, s = compiled.mlstm_step(*args, st, **kw)                 # the identity step: exactly
        for a, b in zip(s, st):
            assert torch.equal(a[0, 0], b[0, 0]) and not torch.equal(a[1, 0], b[1, 0])


@needs_compiled
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_inference_step_runs_compiled(bidirectional, monkeypatch):
    """Under no_grad the recurrent mode (and auto on one step) runs the compiled layer step:
    equal to the python forms, lengths included, and the python step where it is not built."""
    m = _layer(num_layers=2, bidirectional=bidirectional, mode="recurrent")
    x = torch.randn(6, 3, 3, dtype=F64)
    lengths = torch.tensor([6, 2, 4])
    m.mode = "parallel"
    want = m(x, lengths=lengths)
    want_step = m(x[:1], want[1])
    with torch.no_grad():
        m.mode = "recurrent"
        assert m._step_kernel(x, 6) is not None
        got = m(x, lengths=lengths)
        m.mode = "auto"
        got_step = m(x[:1], want[1])
        with monkeypatch.context() as patch:
            patch.setattr(compiled, "mlstm_step_kernel", lambda: None)
            assert m._step_kernel(x[:1], 1) is None
            python_step = m(x[:1], want[1])
    assert m._step_kernel(x[:1], 1) is None                     # grad enabled: the python step
    for a, b in ((got, want), (got_step, want_step), (python_step, want_step)):
        _close(a[0], b[0], 1e-12)
        for u, w in zip(a[1], b[1]):
            _close(u, w, 1e-12)


@pytest.mark.skipif(mlstm_layer._ONEDNN is None, reason="no oneDNN inner product here")
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_projection_equals_linear(bias):
    """The float32 projection on oneDNN (large calls): F.linear's output and gradients to
    float32 rounding; small calls and float64 stay on F.linear."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 30, 64, generator=g, requires_grad=True)
    w = torch.randn(70, 64, generator=g, requires_grad=True)
    b = torch.randn(70, generator=g, requires_grad=True) if bias else None
    assert 40 * 30 * 64 * 70 >= mlstm_layer.ONEDNN_MIN_MACS
    dy = torch.randn(40, 30, 70, generator=g)
    leaves = [t for t in (x, w, b) if t is not None]
    def on_onednn(y):                       # the view of the Function's (M, N_out) output
        fns = [y.grad_fn, *(f for f, _ in y.grad_fn.next_functions if f is not None)]
        return any("OneDNN" in f.name() for f in fns)

    got = mlstm_layer._project(x, w, b)
    assert on_onednn(got)
    want = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    g_got = torch.autograd.grad(got, leaves, dy)
    g_want = torch.autograd.grad(want, leaves, dy.double())
    _close(got.double(), want, 1e-5)
    for a, c in zip(g_got, g_want):
        assert a.dtype == torch.float32
        _close(a.double(), c, 1e-5)
    assert not on_onednn(mlstm_layer._project(x[:2, :2], w, b))
    assert not on_onednn(mlstm_layer._project(x.double(), w.double(), None))


@needs_compiled
@pytest.mark.parametrize("layers", [1, 2])
def test_compiled_layer_step_every_layout(layers):
    """The short way of one step (no lengths, no grad): batched, batch_first and unbatched, with
    and without a state, against the python step under autograd."""
    m = _layer(num_layers=layers, bidirectional=layers == 2)
    DL = 2 * layers if layers == 2 else 1
    x = torch.randn(1, 3, 3, dtype=F64)
    state = tuple(torch.randn(DL, 3, NH, *tail, dtype=F64) for tail in ((2, 2), (2,), ()))
    for args in ((x, state), (x, None), (x[:, 1], tuple(t[:, 1] for t in state))):
        want = m(*args)
        with torch.no_grad():
            got = m(*args)
        assert got[0].shape == want[0].shape
        _close(got[0], want[0], 1e-12)
        for a, b in zip(got[1], want[1]):
            assert a.shape == b.shape
            _close(a, b, 1e-12)
    with torch.no_grad():                           # an empty batch
        y, (C, _, _) = m(x[:, :0])
    assert y.shape == (1, 0, m.num_directions * 4) and C.shape == (DL, 0, NH, 2, 2)
    m.batch_first = True
    with torch.no_grad():
        got = m(x.transpose(0, 1), state)
    m.batch_first = False
    _close(got[0].transpose(0, 1), m(x, state)[0], 1e-12)


@needs_compiled
def test_compiled_layer_step_sees_weight_changes():
    m = _layer(head_norm=False)
    x = torch.randn(1, 3, 3, dtype=F64)
    with torch.no_grad():
        before = m(x)[0]                            # no state: h linear in v
        m.weight_v_l0.mul_(2.0)
        m.bias_v_l0.mul_(2.0)
        after = m(x)[0]
    _close(after, 2 * before, 1e-12)
    assert before.abs().max() > 1e-3


def test_export_sees_plain_torch_operators():
    """torch.export of one inference step and of a float32 training-size call: the compiled
    step and the oneDNN projection stay out of the graph."""
    m = lstmkit.mLSTM(64, 64, num_heads=2).eval()
    step = torch.randn(1, 2, 64)
    state = m(torch.randn(3, 2, 64))[1]
    with torch.no_grad():
        program = torch.export.export(m, (step, state))
        _close(program.module()(step, state)[0], m(step, state)[0], 1e-6)
    x = torch.randn(40, 30, 64)
    assert 40 * 30 * 64 * m.weight_q_l0.shape[0] * 4 >= mlstm_layer.ONEDNN_MIN_MACS
    program = torch.export.export(m, (x,))
    _close(program.module()(x)[0], m(x)[0], 1e-5)


def test_projection_under_bf16_autocast_is_autocasts():
    x, w = torch.randn(40, 30, 64), torch.randn(70, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mlstm_layer._project(x, w, None).dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# the compiled parallel form for training (csrc/mlstm.cpp)

def _with_grads(fn, args, kw, leaves, seed=7):
    """fn(*args, **kw)'s outputs (h~ and the final state) and the gradients of the leaves for
    random cotangents on every output."""
    h, state = fn(*args, **kw)
    outs = (h, *state)
    g = torch.Generator().manual_seed(seed)
    cot = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    return outs, torch.autograd.grad(outs, leaves, cot)


@needs_compiled
@pytest.mark.parametrize("form", ["parallel", "chunkwise"])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_compiled_parallel_form_equals_the_python_one(form, forget_gate, state, eps):
    """Outputs, final states and every gradient, with identity steps (i~ = -inf) and a large i~
    that moves m; float64 to rounding, float32 to its rounding."""
    kernels = compiled.mlstm_parallel_kernel()
    for dtype, tol in ((F64, 1e-12), (torch.float32, 5e-5)):
        q, k, v, i_pre, f_pre, st = _inputs(23, state, dtype=dtype, d=5, batch=(3, 2))
        i_pre[0, 0, 20:] = -math.inf
        f_pre[0, 0, 20:] = math.inf if forget_gate == "sigmoid" else 0.0
        i_pre[1, 1, 5] = 30.0
        leaves = [q, k, v, i_pre, f_pre, *(st or ())]
        for x in leaves:
            x.requires_grad_(True)
        kw = {"forget_gate": forget_gate, "eps": eps}
        if form == "chunkwise":
            kw["chunk_size"] = 8
        args = (q, k, v, i_pre, f_pre, st)
        got = _with_grads(getattr(M, form), args, {**kw, "kernels": kernels}, leaves)
        want = _with_grads(getattr(M, form), args, kw, leaves)
        for a, b in zip(got[0] + got[1], want[0] + want[1]):
            assert a.dtype == dtype and a.shape == b.shape and torch.isfinite(a).all()
            _close(a, b, tol)
        assert want[1][0].abs().max() > 0


@needs_compiled
@pytest.mark.parametrize("form", ["parallel", "chunkwise"])
@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_compiled_parallel_gradcheck(form, state, eps):
    q, k, v, i_pre, f_pre, st = _inputs(5, state, d=3, batch=(1, 2))
    leaves = [q, k, v, i_pre, f_pre, *(st or ())]
    for x in leaves:
        x.requires_grad_(True)
    kernels = compiled.mlstm_parallel_kernel()
    fn = _forms(2)[form]

    def outputs(*a):
        h, s = fn(*a[:5], tuple(a[5:]) if state else None, eps=eps, kernels=kernels)
        return (h, *s)

    assert torch.autograd.gradcheck(outputs, leaves, fast_mode=True)


@needs_compiled
@pytest.mark.parametrize("mode", ["parallel", "chunkwise"])
def test_layer_engines_agree_and_python_runs_no_kernel(mode, monkeypatch):
    """engine="compiled" and "python": the same outputs and parameter gradients (two layers,
    bidirectional, lengths); "python" never calls the extension."""
    results = {}
    x = torch.randn(9, 3, 3, dtype=F64)
    lengths = torch.tensor([9, 4, 6])
    for engine in ("compiled", "python"):
        m = _layer(num_layers=2, bidirectional=True, mode=mode, chunk_size=4, engine=engine)
        with monkeypatch.context() as patch:
            if engine == "python":
                patch.setattr(compiled, "mlstm_parallel_kernel", None)       # not called
            y, state = m(x, lengths=lengths)
            loss = y.sin().sum() + sum(s.sum() for s in state[:2])
            grads = torch.autograd.grad(loss, list(m.parameters()))
        results[engine] = (y, *state, *grads)
    for a, b in zip(results["compiled"], results["python"]):
        _close(a, b, 1e-12)


def test_layer_engine_is_checked_and_named(monkeypatch):
    with pytest.raises(ValueError, match="engine should be one of"):
        _layer(engine="torch")
    m = _layer(engine="compiled")
    assert "engine='compiled'" in repr(m)
    x = torch.randn(4, 2, 3, dtype=F64)
    with monkeypatch.context() as patch:
        patch.setattr(compiled, "mlstm_step_kernel", lambda: None)
        with pytest.raises(RuntimeError, match="engine='compiled', but the compiled engine"):
            m(x)
        assert _layer()(x)[0].shape == (4, 2, 4)            # auto: the python engine
    if compiled.available():
        with pytest.raises(RuntimeError, match="float32 and float64 CPU tensors"):
            _layer(engine="compiled").to(torch.bfloat16)(x.bfloat16())
    stack = lstmkit.xLSTM(3, 4, num_layers=2, engine="python")
    assert {layer.engine for layer in stack.layers} == {"python"}


def test_autocast_runs_the_python_engine():
    """Under bfloat16 autocast the products are autocast's: engine "auto" runs the python
    forms (the same numbers as engine="python"), "compiled" is refused by name."""
    x = torch.randn(12, 2, 3)
    layers = {e: _layer(dtype=torch.float32, engine=e) for e in ("auto", "python", "compiled")}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_auto, _ = layers["auto"](x)
        y_python, _ = layers["python"](x)
        if compiled.available():
            with pytest.raises(RuntimeError, match="outside autocast, .* under autocast"):
                layers["compiled"](x)
    torch.testing.assert_close(y_auto, y_python, atol=0, rtol=0)
