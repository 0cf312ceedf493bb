"""The engines as torch operators: torch.library's own checks, double backward, torch.func,
torch.compile(fullgraph=True), torch.export and torch.jit.trace, against torch.nn (standard
cells) or the independent autograd reference of tests/reference_cells.py (variants)."""

from __future__ import annotations

import io
import pathlib
import sys
import warnings

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call, grad, jacrev, vjp, vmap
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit
from lstmkit.engine import ops, reference

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from reference_cells import run_layer  # noqa: E402

DT = torch.float64
T, B, I, H = 4, 3, 2, 3
ENGINES = ("python", "compiled")
# (layer class, keywords, has a torch.nn equivalent)
CONFIGS = {
    "lstm": ("LSTM", {}, True),
    "lstm-proj": ("LSTM", {"proj_size": 2}, True),
    "lstm-peephole": ("LSTM", {"peephole": True}, False),
    "lstm-coupled": ("LSTM", {"coupled": True}, False),
    "lstm-peephole-coupled": ("LSTM", {"peephole": True, "coupled": True}, False),
    "gru": ("GRU", {}, True),
    "gru-reset-before": ("GRU", {"reset_after": False}, False),
    "rnn-tanh": ("RNN", {}, True),
    "rnn-relu": ("RNN", {"nonlinearity": "relu"}, True),
}


def make(name, engine, seed=0, **extra):
    cls, kw, _ = CONFIGS[name]
    torch.manual_seed(seed)
    return getattr(lstmkit, cls)(I, H, engine=engine, dtype=DT, **kw, **extra)


def twin(module):
    """torch.nn's layer with the same weights."""
    kw = {"num_layers": module.num_layers, "bidirectional": module.bidirectional,
          "batch_first": module.batch_first, "dtype": DT}
    if isinstance(module, lstmkit.LSTM):
        kw["proj_size"] = module.proj_size
    if isinstance(module, lstmkit.RNN):
        kw["nonlinearity"] = module.nonlinearity
    ref = getattr(torch.nn, type(module).__name__)(module.input_size, module.hidden_size, **kw)
    ref.load_state_dict(module.state_dict())
    return ref


def reference_output(module, x, standard: bool):
    """The layer's output from torch.nn where it has the layer, else the independent reference."""
    return twin(module)(x)[0] if standard else run_layer(module, x)[0]


def assert_close(a, b, tol=1e-10):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol, (a - b).abs().max().item()


@pytest.fixture(params=["eager", "operator"])
def path(request, monkeypatch):
    """Eager calls run the kernels through an autograd.Function; "operator" makes them go
    through lstmkit::sequence, as they do under torch's tracers: both must give the same."""
    if request.param == "operator":
        monkeypatch.setattr(ops, "plain_eager", lambda *t: False)
    return request.param


# ------------------------------------------------------------------ torch.library's own checks
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_opcheck(ext, name, engine, packed):
    """Schema, fake kernel against the real one, autograd registration, as torch.library checks
    an operator (its aot_dispatch test included)."""
    m = make(name, engine)
    w = m.weights(0)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    states0 = [torch.randn(B, s, dtype=DT, requires_grad=True) for s in m.cell.state_sizes]
    bs = [3, 2, 2, 1] if packed else []
    args = (x, states0, w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_ch, w.w_hr, m.cell.spec(), bs,
            engine, False)
    torch.library.opcheck(ops.sequence_op, args)


# ------------------------------------------------------------------ double backward
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", CONFIGS)
def test_gradgradcheck(ext, name, engine, path):
    """Second derivatives w.r.t. the input, the initial states and every parameter."""
    m = make(name, engine)
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in m.parameters())
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    h0 = torch.randn(1, B, m.cell.state_sizes[0], dtype=DT, requires_grad=True)

    def f(x, h0, *p):
        hx = (h0, torch.zeros(1, B, H, dtype=DT)) if isinstance(m, lstmkit.LSTM) else h0
        out, _ = functional_call(m, dict(zip(names, p)), (x, hx))
        return out

    assert gradgradcheck(f, (x, h0, *params), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
def test_gradgradcheck_packed_bidirectional(ext, engine, path):
    m = make("lstm-peephole", engine, bidirectional=True)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)

    def f(x):
        return m(pack_padded_sequence(x, [4, 2, 1]))[0].data

    assert gradgradcheck(f, (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


def _penalty_grads(module, x, params=None):
    """Parameter gradients of a WGAN-GP-style input-gradient penalty."""
    x = x.clone().requires_grad_()
    out = module(x)[0]
    (dx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    params = list(module.parameters() if params is None else params)
    return torch.autograd.grad(dx.pow(2).sum() + out.sum(), params)


class _Independent(torch.nn.Module):
    """A variant layer run by tests/reference_cells.py (plain autograd, no lstmkit code)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return run_layer(self.module, x)


@pytest.mark.parametrize("name,engine", [
    (n, e) for n, c in CONFIGS.items() for e in ("python", "compiled", "auto", "torch")
    if c[2] or e != "torch"])                                    # torch has no variants
def test_gradient_penalty(ext, name, engine, path):
    """Parameter gradients of an input-gradient penalty equal torch.nn's (standard cells) or the
    independent reference's (variants)."""
    standard = CONFIGS[name][2]
    m = make(name, engine, num_layers=2)
    x = torch.randn(5, B, I, dtype=DT)
    ref = twin(m) if standard else _Independent(m)
    for ours, theirs in zip(_penalty_grads(m, x), _penalty_grads(ref, x)):
        assert theirs.abs().max() > 0
        assert_close(ours, theirs, 1e-6)


@pytest.mark.parametrize("engine", ("python", "compiled", "auto"))
@pytest.mark.parametrize("family", ["LSTM", "GRU"])
def test_batched_gradients(ext, family, engine, path):
    """Backward under vmap: gradcheck's batched check and is_grads_batched, as torch's own
    module tests run them (two layers, so a first-order backward runs batched too)."""
    m = getattr(lstmkit, family)(I, H, num_layers=2, engine=engine, dtype=DT)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    assert gradcheck(lambda x: m(x)[0], (x,), check_batched_grad=True)
    out = m(x)[0]
    v = torch.randn(4, *out.shape, dtype=DT)
    (batched,) = torch.autograd.grad(out, x, v, is_grads_batched=True)
    assert_close(batched, torch.stack([torch.autograd.grad(m(x)[0], x, vi)[0] for vi in v]))


@pytest.mark.parametrize("engine", ENGINES)
def test_first_order_backward_stays_on_the_engine(ext, engine, path, monkeypatch):
    """Without create_graph the hand-written BPTT runs, never the reference walk."""
    def fail(*a, **k):
        raise AssertionError("the reference walk ran")
    monkeypatch.setattr(ops, "reference_sequence", fail)
    m = make("lstm-peephole", engine)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    m(x)[0].sum().backward()
    assert x.grad.abs().max() > 0


@pytest.mark.parametrize("engine", ENGINES)
def test_trace_double_backward_equals_the_layers(ext, engine):
    m = make("lstm-peephole", engine)
    x = torch.randn(T, B, I, dtype=DT)
    got = _penalty_grads(lambda x: (m.trace(x).output,), x, m.parameters())
    for ours, theirs in zip(got, _penalty_grads(m, x)):
        assert_close(ours, theirs)


def test_reference_walk_matches_the_engine(ext):
    m = make("lstm-peephole-coupled", "python")
    x = torch.randn(T, B, I, dtype=DT)
    s0 = [torch.randn(B, s, dtype=DT) for s in m.cell.state_sizes]
    for bs in (None, [3, 2, 2, 1], [1, 2, 2, 3]):
        ours = reference.reference_sequence(m.cell, x, s0, m.weights(0), bs)
        engine = ops.sequence(m.cell, x, s0, m.weights(0), bs, compiled=True)
        for a, b in zip(ours, engine):
            assert_close(a[1:], b)


# ------------------------------------------------------------------ torch.func
@pytest.mark.parametrize("engine", ("python", "compiled", "auto"))
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn-tanh", "lstm-peephole"])
def test_vmap_grad_vjp_jacrev(ext, name, engine):
    """(torch.nn's own LSTM has no batching rule; "auto" takes the operator under vmap.)"""
    m = make(name, engine)
    xs = torch.randn(4, T, I, dtype=DT)                 # 4 unbatched sequences (L, H_in)

    def run(module):
        return lambda x: module(x)[0]

    ref = twin(m) if CONFIGS[name][2] else _Independent(m)
    ref_run = run(ref) if CONFIGS[name][2] else (lambda x: ref(x.unsqueeze(1))[0].squeeze(1))
    assert_close(vmap(run(m))(xs), torch.stack([ref_run(x) for x in xs]))
    assert_close(jacrev(run(m))(xs[0]), torch.autograd.functional.jacobian(ref_run, xs[0]))
    v = torch.randn(T, H, dtype=DT)
    assert_close(vjp(run(m), xs[0])[1](v)[0], vjp(ref_run, xs[0])[1](v)[0])

    params = {k: p.detach() for k, p in m.named_parameters()}

    def loss(p, x):
        return functional_call(m, p, (x,))[0].pow(2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for k in params:
        expected = torch.stack([grad(loss)(params, x)[k] for x in xs])
        assert_close(per_sample[k], expected)
        p = {n: t.clone().requires_grad_() for n, t in params.items()}
        functional_call(m, p, (xs[1],))[0].pow(2).sum().backward()
        assert_close(grad(loss)(params, xs[1])[k], p[k].grad)


@pytest.mark.parametrize("engine", ENGINES)
def test_vmap_over_weights_runs_each_slice(ext, engine):
    """An ensemble: vmap over stacked parameters (the operator's per-slice rule)."""
    models = [make("gru", engine, seed=s) for s in range(3)]
    stacked = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models])
               for k, _ in models[0].named_parameters()}
    x = torch.randn(T, B, I, dtype=DT)
    out = vmap(lambda p: functional_call(models[0], p, (x,))[0])(stacked)
    for i, m in enumerate(models):
        assert_close(out[i], twin(m)(x)[0])


def test_forward_mode_ad(ext):
    m = make("lstm", "compiled")
    x, v = torch.randn(T, B, I, dtype=DT), torch.randn(T, B, I, dtype=DT)
    ours = torch.func.jvp(lambda x: m(x)[0], (x,), (v,))[1]
    theirs = torch.func.jvp(lambda x: twin(m)(x)[0], (x,), (v,))[1]
    assert_close(ours, theirs)


# ------------------------------------------------------------------ compile, export, jit
@pytest.mark.parametrize("engine", ("auto", "python", "compiled", "torch"))
@pytest.mark.parametrize("family", ["LSTM", "GRU", "RNN"])
def test_compile_fullgraph(ext, family, engine):
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = getattr(lstmkit, family)(I, H, num_layers=2, batch_first=True, bidirectional=True,
                                 engine=engine)
    ref = getattr(torch.nn, family)(I, H, num_layers=2, batch_first=True, bidirectional=True)
    ref.load_state_dict(m.state_dict())
    compiled = torch.compile(m, fullgraph=True, dynamic=True)
    for shape in [(2, 7, I), (3, 9, I), (5, I)]:
        x = torch.randn(*shape, requires_grad=True)
        xr = x.detach().clone().requires_grad_()
        out, theirs = compiled(x)[0], ref(xr)[0]
        out.sum().backward()
        theirs.sum().backward()
        assert_close(out, theirs, 1e-5)
        assert_close(x.grad, xr.grad, 1e-5)


def test_compile_under_bfloat16_autocast_matches_eager(ext):
    """The product choice (bfloat16 products from 3M multiply-adds a step) is made in the kernel,
    where the sizes are known: compiled and eager calls run the same products."""
    torch._dynamo.reset()
    m = lstmkit.LSTM(64, 256, engine="compiled")
    x = torch.randn(20, 32, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = m(x)[0]
        compiled = torch.compile(m, fullgraph=True)(x)[0]
    assert_close(compiled, eager, 1e-6)
    assert (eager - m(x)[0]).abs().max() > 1e-4            # bfloat16 products did run


def test_compile_fullgraph_variant_cell_and_dropout(ext):
    torch._dynamo.reset()
    cell = lstmkit.LSTMCell(I, H, peephole=True)
    x = torch.randn(B, I)
    assert_close(torch.compile(cell, fullgraph=True)(x)[0], cell(x)[0], 1e-6)
    m = lstmkit.LSTM(I, H, num_layers=2, dropout=0.5, coupled=True).train()
    out, _ = torch.compile(m, fullgraph=True)(torch.randn(T, B, I))
    assert out.shape == (T, B, H)


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
@pytest.mark.parametrize("engine", ("auto", "python", "compiled"))
@pytest.mark.parametrize("name", ["lstm", "lstm-peephole", "gru-reset-before", "rnn-relu"])
def test_export_round_trip_at_a_new_length(ext, name, engine, strict):
    m = make(name, engine)
    x = torch.randn(5, 2, I, dtype=DT)
    dims = ({0: torch.export.Dim("T"), 1: torch.export.Dim("N")},)
    program = torch.export.export(m, (x,), dynamic_shapes=dims, strict=strict)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    buf.seek(0)
    loaded = torch.export.load(buf).module()
    x2 = torch.randn(9, 3, I, dtype=DT)
    for got, want in zip(loaded(x2), m(x2)):
        for a, b in zip(*(((got,), (want,)) if torch.is_tensor(got) else (got, want))):
            assert_close(a, b)
    assert_close(m(x2)[0], reference_output(m, x2, CONFIGS[name][2]))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["lstm", "lstm-coupled", "gru"])
def test_jit_trace_replays_other_shapes(ext, name, engine):
    m = make(name, engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(m, (torch.randn(5, 2, I, dtype=DT),), check_trace=False)
    for shape in [(9, 3, I), (1, 1, I)]:
        x = torch.randn(*shape, dtype=DT)
        assert_close(traced(x)[0], m(x)[0])


def test_onnx_export_fails_loudly_instead_of_freezing(ext):
    """torch's TorchScript exporter must refuse the operator, not write a graph frozen to the
    example input; the message names the exporters that work (tests/test_export.py)."""
    m = make("lstm", "compiled")
    with pytest.raises(Exception, match="lstmkit::sequence.*dynamo=True.*export_onnx"):
        torch.onnx.export(m, (torch.randn(T, B, I, dtype=DT),), io.BytesIO(), dynamo=False)


def test_compile_fullgraph_task_model_with_carried_state(ext):
    """A language model of the tasks (embedding, two layers with dropout, fused decoder and
    loss) in one graph, the state carried from one call to the next as truncated BPTT does."""
    from lstmkit.tasks.models import LanguageModel

    torch._dynamo.reset()
    torch.manual_seed(0)
    m = LanguageModel(50, "peephole", embed=16, hidden=16, layers=2)
    tokens, targets = torch.randint(50, (7, 3)), torch.randint(50, (7, 3))
    compiled = torch.compile(m, fullgraph=True)
    loss, state = compiled(tokens, None, targets)
    again, _ = compiled(tokens, state, targets)
    want, want_state = m(tokens, None, targets)
    assert_close(loss, want, 1e-5)
    assert_close(again, m(tokens, want_state, targets)[0], 1e-5)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
