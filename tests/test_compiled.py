"""engine="compiled" (the C++ BPTT engine) against engine="python": outputs, final states and
every gradient for every cell and variant, gradcheck per family, the trace, the caller's
flush-to-zero setting, and the fallback to the python engine when the extension is unavailable.

The extension is built (or loaded from the user's cache) once per session by the ``ext`` fixture;
the first build takes a minute or two. Skipped only when there is no C++ compiler.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.engine import compiled

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")

ATOL = {torch.float32: 1e-5, torch.float64: 1e-10}
I, H, P, T, B = 3, 5, 2, 6, 4
LENGTHS = [3, 6, 1, 4]                     # unsorted on purpose; max == T


def _seed(*parts) -> None:
    torch.manual_seed(zlib.crc32(repr(parts).encode()))


# name -> (class, keyword arguments); every cell and variant the engine has
CONFIGS = {
    "lstm": (lstmkit.LSTM, {}),
    "lstm-peephole": (lstmkit.LSTM, {"peephole": True}),
    "lstm-coupled": (lstmkit.LSTM, {"coupled": True}),
    "lstm-peephole-coupled": (lstmkit.LSTM, {"peephole": True, "coupled": True}),
    "lstm-proj": (lstmkit.LSTM, {"proj_size": P}),
    "lstm-peephole-proj": (lstmkit.LSTM, {"peephole": True, "proj_size": P}),
    "lstm-coupled-proj": (lstmkit.LSTM, {"coupled": True, "proj_size": P}),
    "lstm-peephole-coupled-proj": (lstmkit.LSTM, {"peephole": True, "coupled": True,
                                                  "proj_size": P}),
    "gru": (lstmkit.GRU, {}),
    "gru-reset_before": (lstmkit.GRU, {"reset_after": False}),
    "rnn-tanh": (lstmkit.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (lstmkit.RNN, {"nonlinearity": "relu"}),
}


def _pair(config, dtype=torch.float64, **kw):
    """The same layer twice, engine="python" and engine="compiled", with the same weights
    (perturbed away from the default init so that every gate matters)."""
    cls, ckw = CONFIGS[config]
    _seed(config, repr(kw))
    python = cls(I, H, dtype=dtype, engine="python", **ckw, **kw)
    with torch.no_grad():
        for p in python.parameters():
            p.uniform_(-0.6, 0.6)
    comp = cls(I, H, dtype=dtype, engine="compiled", **ckw, **kw)
    comp.load_state_dict(python.state_dict())
    return python, comp


def _initial(module, batch=B, dtype=torch.float64):
    L = module.num_layers * module.num_directions
    sizes = module.cell.state_sizes
    states = [torch.randn(L, batch, s, dtype=dtype) for s in sizes]
    return states


def _run_and_grads(module, x, h0, mode, batch_first=False, lengths=tuple(LENGTHS)):
    """Forward in the given mode, a loss on the output and every final state; returns
    (output, final states, [dx, dh0...], {name: grad})."""
    xl = x.clone().requires_grad_()
    hl = [h.clone().requires_grad_() for h in h0] if h0 is not None else None
    hx = None if hl is None else (tuple(hl) if len(hl) == 2 else hl[0])
    if mode == "packed":
        out, hidden = module(pack_padded_sequence(xl, torch.tensor(lengths),
                                                  batch_first=batch_first, enforce_sorted=False),
                             hx)
        out = out.data
    elif mode == "lengths":
        out, hidden = module(xl, hx, lengths=sorted(lengths, reverse=True))
    else:
        out, hidden = module(xl, hx)
    states = list(hidden) if isinstance(hidden, tuple) else [hidden]
    gen = torch.Generator().manual_seed(3)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum()
    for s in states:
        loss = loss + (s.sin() * torch.randn(s.shape, generator=gen, dtype=s.dtype)).sum()
    leaves = [xl] + (hl or [])
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(loss, leaves + list(params.values()))
    return out, states, list(grads[: len(leaves)]), dict(zip(params, grads[len(leaves):]))


def _close(got, want, atol, what, rtol=0.0):
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def _assert_same(a, b, atol, rtol=0.0):
    (o1, s1, g1, p1), (o2, s2, g2, p2) = a, b
    _close(o2, o1, atol, "output", rtol)
    for i, (u, v) in enumerate(zip(s1, s2)):
        _close(v, u, atol, f"final state {i}", rtol)
    for i, (u, v) in enumerate(zip(g1, g2)):
        _close(v, u, atol, f"input gradient {i}", rtol)
    assert p1.keys() == p2.keys()
    for name in p1:
        _close(p2[name], p1[name], atol, name, rtol)


def _compare(config, layers, bidir, mode, dtype, with_h0=True, batch_first=False, bias=True):
    python, comp = _pair(config, dtype, num_layers=layers, bidirectional=bidir,
                         batch_first=batch_first, bias=bias)
    x = torch.randn(*((B, T) if batch_first else (T, B)), I, dtype=dtype)
    h0 = _initial(python, dtype=dtype) if with_h0 else None
    _assert_same(_run_and_grads(python, x, h0, mode, batch_first),
                 _run_and_grads(comp, x, h0, mode, batch_first), ATOL[dtype])


def _cases():
    cases = [(c, layers, bidir, mode, torch.float64)
             for c, layers, bidir, mode in itertools.product(CONFIGS, (1, 2), (False, True),
                                                             ("padded", "packed"))]
    cases += [(c, 2, True, mode, torch.float32)
              for c, mode in itertools.product(CONFIGS, ("padded", "packed"))]
    return cases


CASES = _cases()


@pytest.mark.parametrize("config,layers,bidir,mode,dtype", CASES,
                         ids=[f"{c}-L{n}-{'bi' if b else 'uni'}-{m}-{str(d)[6:]}"
                              for c, n, b, m, d in CASES])
def test_matches_python_engine(ext, config, layers, bidir, mode, dtype):
    _compare(config, layers, bidir, mode, dtype)


@pytest.mark.parametrize("config", ["lstm-peephole-coupled-proj", "lstm", "gru",
                                    "gru-reset_before", "rnn-relu"])
@pytest.mark.parametrize("mode", ["padded", "packed"])
def test_matches_python_engine_long_sequence(ext, config, mode):
    """T = 20 steps: the engine copies W_hh^T to a contiguous layout from 16 steps on (below it
    it multiplies by the transposed view)."""
    python, comp = _pair(config, num_layers=1, bidirectional=True)
    x = torch.randn(20, B, I, dtype=torch.float64)
    h0 = _initial(python)
    lengths = (13, 20, 2, 17)
    _assert_same(_run_and_grads(python, x, h0, mode, lengths=lengths),
                 _run_and_grads(comp, x, h0, mode, lengths=lengths), 1e-10)


@pytest.mark.parametrize("config", CONFIGS)
def test_matches_python_engine_lengths_batch_first_no_h0(ext, config):
    _compare(config, 2, True, "lengths", torch.float64, with_h0=False, batch_first=True)


@pytest.mark.parametrize("config", ["lstm-peephole-coupled-proj", "gru", "gru-reset_before",
                                    "rnn-relu"])
@pytest.mark.parametrize("mode", ["padded", "packed"])
def test_matches_python_engine_without_bias(ext, config, mode):
    _compare(config, 2, True, mode, torch.float64, bias=False)


@pytest.mark.parametrize("config", ["lstm", "lstm-peephole-proj", "gru", "rnn-tanh"])
def test_unbatched_and_single_step(ext, config):
    python, comp = _pair(config, num_layers=2, bidirectional=True)
    for x in (torch.randn(T, I, dtype=torch.float64), torch.randn(1, 1, I, dtype=torch.float64)):
        for a, b in zip(python(x), comp(x)):
            for u, v in zip(a if isinstance(a, tuple) else [a], b if isinstance(b, tuple) else [b]):
                torch.testing.assert_close(v, u, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cls,kw", [(lstmkit.LSTMCell, {}), (lstmkit.LSTMCell, {"peephole": True}),
                                    (lstmkit.LSTMCell, {"coupled": True}), (lstmkit.GRUCell, {}),
                                    (lstmkit.GRUCell, {"reset_after": False}),
                                    (lstmkit.RNNCell, {"nonlinearity": "relu"})])
def test_step_cells(ext, cls, kw):
    torch.manual_seed(0)
    python = cls(I, H, dtype=torch.float64, engine="python", **kw)
    comp = cls(I, H, dtype=torch.float64, engine="compiled", **kw)
    comp.load_state_dict(python.state_dict())
    x = torch.randn(B, I, dtype=torch.float64)
    results = []
    for m in (python, comp):
        xl = x.clone().requires_grad_()
        out = m(xl)
        outs = list(out) if isinstance(out, tuple) else [out]
        grads = torch.autograd.grad(sum(o.sin().sum() for o in outs), [xl, *m.parameters()])
        results.append(outs + list(grads))
    for u, v in zip(*results):
        torch.testing.assert_close(v, u, atol=1e-10, rtol=0)


def test_backward_twice_accumulates(ext):
    python, comp = _pair("lstm-peephole", num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, dtype=torch.float64)
    for module in (python, comp):
        for _ in range(2):
            out, (h, c) = module(x)
            (out.pow(2).sum() + h.sum() + c.sum()).backward()
    for (name, p), q in zip(python.named_parameters(), comp.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-10, rtol=0, msg=name)


# ------------------------------------------------------------------ gradcheck
GRADCHECK = ["lstm", "lstm-peephole-coupled-proj", "lstm-peephole-proj", "gru",
             "gru-reset_before", "rnn-tanh", "rnn-relu"]


@pytest.mark.parametrize("config", GRADCHECK)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_gradcheck(ext, config, packed):
    """Finite differences in float64 w.r.t. x, the initial states and every parameter, through
    two bidirectional layers (a packed batch exercises rows joining late in the reverse pass)."""
    cls, ckw = CONFIGS[config]
    _seed("gradcheck", config, packed)
    module = cls(2, 3, num_layers=2, bidirectional=True, dtype=torch.float64, engine="compiled",
                 **ckw)
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    states = tuple(s.requires_grad_() for s in _initial(module, batch=3))
    k = len(states)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)

    def f(x, *rest):
        st, values = rest[:k], rest[k:]
        hx = tuple(st) if k == 2 else st[0]
        inp = pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=False) \
            if packed else x
        out, hidden = functional_call(module, dict(zip(names, values)), (inp, hx))
        out = out.data if packed else out
        return (out, *hidden) if isinstance(hidden, tuple) else (out, hidden)

    assert gradcheck(f, (x, *states, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


# ------------------------------------------------------------------ trace
@pytest.mark.parametrize("config", ["lstm", "lstm-peephole-coupled", "lstm-peephole-proj",
                                    "gru", "gru-reset_before", "rnn-tanh", "rnn-relu"])
@pytest.mark.parametrize("lengths", [None, (6, 4, 3, 1)], ids=["full", "lengths"])
def test_trace_matches_python_engine(ext, config, lengths):
    python, comp = _pair(config, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = _initial(python)
    hx = tuple(h0) if len(h0) == 2 else h0[0]
    traces = []
    for module in (python, comp):
        tr = module.trace(x, hx, lengths=lengths)
        loss = tr.output.pow(2).sum() + tr.h_n.sin().sum()
        if tr.c_n is not None:
            loss = loss + tr.c_n.cos().sum()
        loss.backward()
        traces.append(tr)
    a, b = traces
    torch.testing.assert_close(b.output, a.output, atol=1e-10, rtol=0)
    for layer in range(2):
        for d in range(2):
            sa, sb = a.steps[layer][d], b.steps[layer][d]
            where = f"layer {layer} direction {d}"
            for what in ("h", "c", "grad_h", "grad_c"):
                u, v = getattr(sa, what), getattr(sb, what)
                assert (u is None) == (v is None), f"{what}, {where}"
                if u is not None:
                    _close(v, u, 1e-10, f"{what}, {where}")
            assert sa.gates.keys() == sb.gates.keys()
            for name in sa.gates:
                _close(sb.gates[name], sa.gates[name], 1e-10, f"gate {name}, {where}")


# ------------------------------------------------------------------ denormals
def _flushes() -> bool:
    """Does this thread flush float32 denormal results to zero right now?"""
    tiny = torch.tensor([1e-30], dtype=torch.float32)
    return bool((tiny * 1e-10 == 0).item())


@pytest.mark.parametrize("ftz", [False, True])
def test_callers_flush_to_zero_setting_is_unchanged(ext, ftz):
    if not torch.set_flush_denormal(ftz):
        pytest.skip("this CPU has no flush-to-zero control")
    try:
        assert _flushes() == ftz
        python, comp = _pair("lstm-peephole", dtype=torch.float32)
        x = torch.randn(T, B, I, requires_grad=True)
        out, (h, c) = comp(x)
        assert _flushes() == ftz, "forward changed the caller's flush-to-zero setting"
        (out.sum() + c.sum()).backward()
        assert _flushes() == ftz, "backward changed the caller's flush-to-zero setting"
    finally:
        torch.set_flush_denormal(False)


# ------------------------------------------------------------------ build and fallback
def test_extension_is_vectorised_for_this_cpu(ext):
    """Built for the CPU capability torch uses, so Vectorized is SIMD, not its scalar loop."""
    cap, _ = compiled.capability_flags()
    assert ext.capability() == cap
    if cap != "DEFAULT":
        assert ext.vectorized()


def test_float32_tanh_within_two_ulp(hooks):
    """The engine's float32 tanh (one exp and a Taylor core instead of SLEEF's tanh) against the
    float64 tanh, over a dense sweep of [-12, 12] and tiny to large magnitudes."""
    x = torch.cat([torch.linspace(-12, 12, 2_000_001), torch.logspace(-30, 1.2, 200_001),
                   -torch.logspace(-30, 1.2, 200_001),
                   torch.tensor([0.0, -0.0, 0.34657359, -0.34657359, 50.0, -50.0])])
    got = hooks.tanh_float(x).double()
    want = torch.tanh(x.double())
    ulp = torch.from_numpy(np.spacing(want.abs().float().numpy())).double()
    err = ((got - want).abs() / ulp).max().item()
    assert err <= 2.1, f"max error {err:.2f} ulp"
    nan = hooks.tanh_float(torch.tensor([float("nan"), float("inf"), -float("inf")]))
    assert nan[0].isnan() and nan[1] == 1 and nan[2] == -1


def test_cache_directory_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compiled.cache_dir() == tmp_path / "lstmkit" / "extensions"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(compiled.cache_dir()).endswith(os.path.join(".cache", "lstmkit", "extensions"))


def test_build_runs_the_ninja_beside_python(monkeypatch, tmp_path):
    """Another ninja earlier on PATH (a system one) is not the one the build runs: two ninja
    versions do not read each other's build logs and rebuilt the extension on every switch."""
    here = shutil.which("ninja", path=os.path.dirname(sys.executable))
    if here is None:
        pytest.skip("no ninja beside this python")
    other = tmp_path / "ninja"
    other.write_text("#!/bin/sh\nexit 1\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    with compiled._ninja_on_path():
        assert shutil.which("ninja") == here
    assert shutil.which("ninja") == str(other)


def test_build_key_follows_the_sources(monkeypatch, tmp_path):
    """The build's name and directory hash every file of csrc/ and the sources, not where they
    lie: the same sources in another checkout share one build, an edited header gets its own
    (a worktree never loads another's engine), and the test hooks build beside the engine."""
    engine = compiled._extension(compiled.ENGINE_MODULE, compiled.engine_sources())
    hooks = compiled._extension("lstmkit_engine_hooks",
                                [Path(__file__).parent / "csrc" / "engine_hooks.cpp"])
    assert hooks[0] != engine[0] and hooks[1] != engine[1]
    copy = tmp_path / "csrc"
    shutil.copytree(compiled.CSRC, copy)
    monkeypatch.setattr(compiled, "CSRC", copy)
    assert compiled._extension(compiled.ENGINE_MODULE, compiled.engine_sources()) == engine
    header = copy / "thresholds.h"
    header.write_text(header.read_text() + "// edited\n")
    edited = compiled._extension(compiled.ENGINE_MODULE, compiled.engine_sources())
    assert edited[0] != engine[0] and edited[1] != engine[1]


def test_a_stale_build_lock_does_not_stop_a_load(tmp_path):
    """torch's build takes a plain lock file even when there is nothing to build; a process
    killed at start-up while it held the file left it behind, and every later process waited on
    it forever. A built extension loads without it: here with the file present and no compiler
    (so nothing was built)."""
    if not compiled.available():
        pytest.skip("the compiled engine is unavailable")
    name, build_dir, _ = compiled._extension(compiled.ENGINE_MODULE, compiled.engine_sources())
    target = tmp_path / "lstmkit" / "extensions" / build_dir.name
    target.mkdir(parents=True)
    shutil.copy(build_dir / f"{name}.so", target)
    (target / "lock").touch()
    code = ("from lstmkit.engine import compiled; "
            "print(compiled.available(), compiled.build_error())")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "CXX": "no-such-compiler"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["True", "None"], out.stdout + out.stderr


def test_a_build_first_removes_the_lock_file_a_killed_build_left(monkeypatch, tmp_path):
    """Under the build's own lock (released by the kernel when its holder dies) torch's lock
    file can only be stale: it is removed before torch's build runs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    name, build_dir, _ = compiled._extension(compiled.ENGINE_MODULE, compiled.engine_sources())
    build_dir.mkdir(parents=True)
    (build_dir / "lock").touch()
    seen = {}

    def fake_load(**kw):
        seen.update(lock=(build_dir / "lock").exists(), name=kw["name"])
        return "module"

    from torch.utils import cpp_extension
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setenv("CXX", sys.executable)          # any program passes the compiler check
    assert compiled.build_extension(compiled.ENGINE_MODULE, compiled.engine_sources()) == "module"
    assert seen == {"lock": False, "name": name}


def test_fallback_when_extension_unavailable(monkeypatch):
    """No extension (no compiler, failed build): one warning, then the python engine."""
    monkeypatch.setattr(compiled, "_state",
                        {"tried": True, "ext": None, "error": "RuntimeError: simulated failure"})
    monkeypatch.setattr(compiled, "_warned", set())
    assert not compiled.available()
    python, comp = _pair("gru-reset_before", num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="compiled engine is unavailable.*simulated failure"):
        out = _run_and_grads(comp, x, None, "packed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # only one warning per process
        out2 = _run_and_grads(comp, x, None, "padded")
    _assert_same(_run_and_grads(python, x, None, "packed"), out, 1e-12)
    _assert_same(_run_and_grads(python, x, None, "padded"), out2, 1e-12)


def test_bfloat16_runs_python_engine_with_one_warning(monkeypatch):
    monkeypatch.setattr(compiled, "_warned", set())
    python, comp = _pair("lstm-coupled", dtype=torch.bfloat16)
    x = torch.randn(T, B, I, dtype=torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="float32 and float64"):
        out, _ = comp(x)
    torch.testing.assert_close(out, python(x)[0], atol=0, rtol=0)


# ------------------------------------------------------------------ brgemm step products
@pytest.fixture
def avx512_hooks(ext, hooks):
    """The test hooks (tests/csrc/engine_hooks.cpp), where the brgemm paths are built (AVX-512
    builds only); built with the engine's flags, so for the same capability."""
    if ext.capability() != "AVX512":
        pytest.skip("the brgemm path is built for AVX-512 only")
    assert hooks.avx512()
    return hooks


@pytest.mark.parametrize("m,k,n", [(1, 5, 20), (4, 5, 20), (16, 128, 512), (20, 200, 800),
                                   (16, 512, 128), (7, 33, 17), (64, 64, 1000), (3, 1, 1)])
def test_brgemm_step_product_is_the_product(avx512_hooks, m, k, n):
    """The small float32 per-step product (out += a b on oneDNN's brgemm, split into column
    blocks over the threads) equals torch's, odd sizes and tails included."""
    torch.manual_seed(m * 1000 + n)
    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
    want = torch.addmm(out.double(), a.double(), b.double())
    assert avx512_hooks.brgemm_add(out, a, b)
    torch.testing.assert_close(out.double(), want, atol=1e-4 * (k ** 0.5), rtol=1e-5)
    assert not avx512_hooks.brgemm_add(torch.zeros(65, n), torch.randn(65, k), b)  # too many rows
    if k > 1 and n > 1:
        assert not avx512_hooks.brgemm_add(out, a, b.t().contiguous().t())  # not row-major
    assert not avx512_hooks.brgemm_add(out.double(), a.double(), b.double())  # float64


@pytest.mark.parametrize("m,k,n", [(700, 200, 800), (3200, 64, 129), (65, 1100, 70), (1, 3, 1),
                                   (130, 513, 17)])
@pytest.mark.parametrize("add", [False, True])
def test_brgemm_tiles_are_the_product(avx512_hooks, m, k, n, add):
    """The whole-sequence float32 product on brgemm tiles (64 x 64 tiles over the threads, the
    reduction in chunks of 512) equals torch's: partial tiles, a reduction of 1100 (three chunks),
    accumulating or not."""
    torch.manual_seed(m + k + n)
    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
    want = (out.double() if add else 0) + a.double() @ b.double()
    assert avx512_hooks.brgemm_mm(out, a, b, add)
    torch.testing.assert_close(out.double(), want, atol=1e-4 * (k ** 0.5), rtol=1e-5)
    assert not avx512_hooks.brgemm_mm(out.double(), a.double(), b.double(), add)  # float64
    if k > 1 and n > 1:
        assert not avx512_hooks.brgemm_mm(out, a, b.t().contiguous().t(), add)  # not row-major


@pytest.mark.parametrize("r,c", [(700, 800), (65, 17), (1, 1), (130, 3), (3, 130)])
def test_transpose_is_the_transpose(avx512_hooks, r, c):
    """The blocked transpose that feeds dgates^T to the weight-gradient products: exact, partial
    16 x 16 blocks and partial 64-row chunks included."""
    a = torch.randn(r, c)
    assert torch.equal(avx512_hooks.transpose(a), a.t())


@pytest.mark.parametrize("config", CONFIGS)
def test_long_float32_calls_on_brgemm_match_python_engine(ext, config):
    """16+ steps make W_hh^T contiguous, so the forward step products of these small float32
    layers run on brgemm too (the backward ones do at any length): outputs and every gradient
    within float32 tolerance of the python engine, padded and packed (relative 1e-5 as well:
    the ReLU RNN's weight gradients reach ~20 over 20 steps)."""
    python, comp = _pair(config, torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(20, B, I)
    h0 = _initial(python, dtype=torch.float32)
    for mode in ("padded", "packed"):
        lengths = (12, 20, 3, 17)
        _assert_same(_run_and_grads(python, x, h0, mode, lengths=lengths),
                     _run_and_grads(comp, x, h0, mode, lengths=lengths), ATOL[torch.float32],
                     rtol=1e-5)


@pytest.mark.parametrize("config", [c for c in CONFIGS if not c.startswith("gru")])
@pytest.mark.parametrize("threads", [1, 2])
def test_rows_split_over_threads_match_python_engine(ext, config, threads):
    """float32 batches of 16+ rows on AVX-512 builds run each thread's rows through the whole
    time loop (the LSTM without projection, the RNN; on 2 threads 21 rows split 10 + 11): on 1
    and 2 threads, outputs and every gradient within float32 tolerance of the python engine,
    padded and packed (groups with no active row at some steps, a reverse pass whose rows start
    late). How the rows are split is the engine's business; that the answer does not depend on
    it is the behaviour tested."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        python, comp = _pair(config, torch.float32, num_layers=2, bidirectional=True)
        rows, steps = 21, 20
        x = torch.randn(steps, rows, I)
        _seed("lengths", config)
        lengths = torch.randint(1, steps + 1, (rows,)).tolist()
        lengths[3] = steps
        h0 = _initial(python, batch=rows, dtype=torch.float32)
        for mode in ("padded", "packed"):
            _assert_same(_run_and_grads(python, x, h0, mode, lengths=lengths),
                         _run_and_grads(comp, x, h0, mode, lengths=lengths),
                         ATOL[torch.float32], rtol=1e-5)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ oneDNN products
ONEDNN_CASES = [(c, mode) for c in CONFIGS for mode in ("padded", "packed")]


@pytest.mark.parametrize("config,mode", ONEDNN_CASES, ids=[f"{c}-{m}" for c, m in ONEDNN_CASES])
def test_onednn_products_match_python_engine(ext, monkeypatch, config, mode):
    """float32 products on oneDNN's prepacked inner product (large calls; forced here for small
    ones): outputs and every gradient within float32 tolerance of the python engine."""
    if not ext.onednn():
        pytest.skip("this torch has no oneDNN inner-product ops")
    monkeypatch.setattr(compiled, "ONEDNN_STEP_MACS", 0)
    monkeypatch.setattr(compiled, "ONEDNN_MIN_STEPS", 0)
    python, comp = _pair(config, torch.float32, num_layers=2, bidirectional=True)
    assert compiled.products(comp.cell, torch.empty(T, B, I)) == (False, True)
    x = torch.randn(T, B, I)
    h0 = _initial(python, dtype=torch.float32)
    _assert_same(_run_and_grads(python, x, h0, mode), _run_and_grads(comp, x, h0, mode),
                 ATOL[torch.float32])


def test_products_choice():
    """oneDNN for large float32 calls of enough steps, bfloat16 under autocast, else at::mm."""
    if not compiled.available():
        pytest.skip("the compiled engine is unavailable")
    cell = lstmkit.LSTM(512, 512).cell                         # 64 x 512 x 2048 = 67M per step
    on = compiled._state["ext"].onednn()
    assert compiled.products(cell, torch.empty(50, 64, 512)) == (False, on)
    assert compiled.products(cell, torch.empty(8, 64, 512)) == (False, False)      # few steps
    assert compiled.products(cell, torch.empty(50, 1, 512)) == (False, False)      # batch 1
    assert compiled.products(cell, torch.empty(50, 64, 512).double()) == (False, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):       # bfloat16, prepacked when long
        assert compiled.products(cell, torch.empty(50, 64, 512)) == (True, on)
        assert compiled.products(cell, torch.empty(8, 64, 512)) == (True, False)


# ------------------------------------------------------------------ bfloat16 autocast
def _rel(got, want):
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("mode", ["padded", "packed"])
@pytest.mark.parametrize("products", ["mm", "onednn"])
def test_bf16_autocast_within_bfloat16_precision(ext, monkeypatch, config, mode, products):
    """Under bfloat16 autocast the products run in bfloat16 (at::mm, or oneDNN's prepacked inner
    product for long calls, forced here) and the rest in float32: outputs (float32), final states
    and every gradient within bfloat16 precision of the float32 python engine's, and measurably
    not equal to them."""
    if products == "onednn" and not ext.onednn():
        pytest.skip("this torch has no oneDNN inner-product ops")
    monkeypatch.setattr(compiled, "BF16_MIN_STEP_MACS", 0)    # these small layers too
    monkeypatch.setattr(compiled, "ONEDNN_MIN_STEPS", 0 if products == "onednn" else 10**9)
    python, comp = _pair(config, torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I)
    h0 = _initial(python, dtype=torch.float32)
    o1, s1, g1, p1 = _run_and_grads(python, x, h0, mode)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compiled.products(comp.cell, x) == (True, products == "onednn")
        o2, s2, g2, p2 = _run_and_grads(comp, x, h0, mode)
    assert o2.dtype == torch.float32 and all(s.dtype == torch.float32 for s in s2)
    pairs = [("output", o2, o1)] + [(f"state {i}", b, a) for i, (a, b) in enumerate(zip(s1, s2))]
    pairs += [(f"input gradient {i}", b, a) for i, (a, b) in enumerate(zip(g1, g2))]
    pairs += [(name, p2[name], p1[name]) for name in p1]
    errors = {what: _rel(got, want) for what, got, want in pairs}
    assert max(errors.values()) < 3e-2, errors
    assert errors["output"] > 1e-5                 # float32 products would agree to ~1e-7


@pytest.mark.parametrize("products", ["mm", "onednn"])
def test_bf16_autocast_step_is_the_bfloat16_formula(ext, monkeypatch, products):
    """One LSTM step under autocast computed independently: products of bfloat16-rounded
    operands (torch.mm in bfloat16), bias and gates in float32; on either product path."""
    if products == "onednn" and not ext.onednn():
        pytest.skip("this torch has no oneDNN inner-product ops")
    monkeypatch.setattr(compiled, "BF16_MIN_STEP_MACS", 0)
    monkeypatch.setattr(compiled, "ONEDNN_MIN_STEPS", 0 if products == "onednn" else 10**9)
    torch.manual_seed(0)
    m = lstmkit.LSTM(I, H, engine="compiled")
    x, h0, c0 = torch.randn(1, B, I), torch.randn(1, B, H), torch.randn(1, B, H)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compiled.products(m.cell, x) == (True, products == "onednn")
        _, (h, c) = m(x, (h0, c0))
    bf = torch.bfloat16
    with torch.no_grad():
        pre = (m.bias_ih_l0 + m.bias_hh_l0) + torch.mm(x[0].to(bf), m.weight_ih_l0.to(bf).t())
        pre = pre + torch.mm(h0[0].to(bf), m.weight_hh_l0.to(bf).t())
        i, f, g, o = pre.chunk(4, 1)
        c_want = f.sigmoid() * c0[0] + i.sigmoid() * g.tanh()
        h_want = o.sigmoid() * c_want.tanh()
    torch.testing.assert_close(c[0], c_want, atol=1e-6, rtol=0)
    torch.testing.assert_close(h[0], h_want, atol=1e-6, rtol=0)


def test_bf16_autocast_keeps_float32_products_for_small_calls_and_float64(ext):
    """Below BF16_MIN_STEP_MACS, and for float64 inputs, autocast changes nothing."""
    for dtype in (torch.float32, torch.float64):
        _, comp = _pair("lstm-peephole", dtype=dtype, num_layers=2)
        x = torch.randn(T, B, I, dtype=dtype)
        want = comp(x)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = comp(x)[0]
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_bf16_autocast_threshold_counts_the_step_product():
    cell = lstmkit.LSTM(512, 512).cell                     # 4 gates: 64 x 512 x 2048 per step
    x = torch.empty(50, 64, 512)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compiled.bf16_products(cell, x)
        assert not compiled.bf16_products(cell, torch.empty(50, 1, 512))
        assert not compiled.bf16_products(cell, x.double())
    assert not compiled.bf16_products(cell, x)


def test_bfloat16_input_under_autocast_runs_as_float32(ext):
    """A bfloat16 input (from a layer autocast ran before) is taken as float32 under autocast."""
    _, comp = _pair("gru", dtype=torch.float32)
    xb = torch.randn(T, B, I).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = comp(xb)[0]
    torch.testing.assert_close(got, comp(xb.float())[0], atol=0, rtol=0)
    with pytest.raises(ValueError, match="dtype"):
        comp(xb)


def _flatten(result):
    """A module's result (output, states), (h, c) or h as a flat list of tensors."""
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for part in result for t in _flatten(part)]


class _CountingExtension:
    """The extension, counting the sequences its forward runs."""

    def __init__(self, ext):
        self.ext, self.forwards = ext, 0

    def __getattr__(self, name):
        return getattr(self.ext, name)

    def forward(self, *args):
        self.forwards += 1
        return self.ext.forward(*args)


def test_compiled_engine_runs_every_configuration(ext, monkeypatch):
    """engine="compiled" runs every layer configuration and every step cell on the extension
    (one forward per layer and direction, no fallback warning) with the python engine's
    outputs."""
    counting = _CountingExtension(ext)
    monkeypatch.setitem(compiled._state, "ext", counting)
    monkeypatch.setattr(compiled, "_warned", set())
    x = torch.randn(T, B, I, dtype=torch.float64)
    steps = [(lstmkit.LSTMCell, {"peephole": True}), (lstmkit.GRUCell, {}), (lstmkit.RNNCell, {})]
    modules = [(cls, {**kw, "num_layers": 2}) for cls, kw in CONFIGS.values()] + steps
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)            # a fallback warns
        for cls, kw in modules:
            _seed(cls.__name__, repr(kw))
            python = cls(I, H, dtype=torch.float64, engine="python", **kw)
            comp = cls(I, H, dtype=torch.float64, engine="compiled", **kw)
            comp.load_state_dict(python.state_dict())
            before = counting.forwards
            inp = x if kw.get("num_layers") else x[0]
            out, want = comp(inp), python(inp)
            assert counting.forwards - before == kw.get("num_layers", 1), (cls, kw)
            for a, b in zip(_flatten(out), _flatten(want)):
                torch.testing.assert_close(a, b, atol=ATOL[torch.float64], rtol=0)


def test_release_frees_buffers_and_the_next_call_is_unchanged(ext):
    """workspace.release() drops the kept buffers (python scratch and the extension's); the next
    backward makes them anew and gives the same gradients."""
    from lstmkit.engine import workspace
    torch.manual_seed(5)
    layer = lstmkit.LSTM(6, 8, engine="compiled", peephole=True)
    x = torch.randn(20, 4, 6)

    def grads():
        layer.zero_grad()
        layer(x)[0].square().sum().backward()
        return [p.grad.clone() for p in layer.parameters()]

    first = grads()
    workspace.release()
    assert not getattr(workspace._local, "pool", None)
    for a, b in zip(first, grads()):
        assert torch.equal(a, b)


def test_the_engine_leaves_torchs_workers_keeping_denormals(ext):
    """Threads start with their creator's MXCSR: workers first made inside a call (under its
    flush-to-zero) would flush denormals in every later torch op. In a fresh process whose first
    parallel region is a compiled call, torch's parallel float32 -> float64 copy afterwards
    keeps a denormal, and so does the calling thread."""
    code = textwrap.dedent("""
        import numpy as np, torch, lstmkit
        torch.set_num_threads(2)
        layer = lstmkit.LSTM(16, 64, engine="compiled")
        x = torch.randn(20, 32, 16, requires_grad=True)
        layer(x)[0].sum().backward()
        tiny = torch.full((1 << 20,), 1e-45)
        assert tiny.double().min().item() > 0, "a worker flushes denormals"
        assert np.spacing(np.float32(0)) > 0, "the calling thread flushes denormals"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
