"""lstmkit.LSTM / GRU / RNN against torch.nn: outputs, final states and every gradient."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit.engine import compiled
from lstmkit.layers import AUTO_SHORT_T

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
ENGINES = ("python", "torch")
ATOL = {torch.float32: 1e-5, torch.float64: 1e-10}
I, H, T, B = 3, 4, 5, 4
LENGTHS = [3, 5, 1, 4]                     # unsorted on purpose; max == T


def build(kind, num_layers=1, bidirectional=False, batch_first=False, proj_size=0,
          dtype=torch.float64, engine="python", bias=True, dropout=0.0, seed=0):
    """A torch.nn module and an lstmkit module holding the same weights."""
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
              bidirectional=bidirectional, dtype=dtype)
    torch.manual_seed(seed)
    if kind == "lstm":
        ref = nn.LSTM(I, H, proj_size=proj_size, **kw)
        ours = lstmkit.LSTM(I, H, proj_size=proj_size, engine=engine, **kw)
    elif kind == "gru":
        ref = nn.GRU(I, H, **kw)
        ours = lstmkit.GRU(I, H, engine=engine, **kw)
    else:
        nl = kind.split("_")[1]
        ref = nn.RNN(I, H, nonlinearity=nl, **kw)
        ours = lstmkit.RNN(I, H, nonlinearity=nl, engine=engine, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def state_shapes(kind, num_layers, bidirectional, proj_size, batch):
    LD = num_layers * (2 if bidirectional else 1)
    lead = (LD,) if batch is None else (LD, batch)
    if kind == "lstm":
        return [(*lead, proj_size or H), (*lead, H)]
    return [(*lead, H)]


def run(module, kind, x, hx, mode, batch_first):
    """Run module on the padded leaf x according to mode; returns (output tensor, [states])."""
    if mode == "packed":
        inp = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=batch_first,
                                   enforce_sorted=False)
        out, hidden = module(inp, hx)
        assert isinstance(out, PackedSequence)
        out = out.data
    elif mode == "lengths":
        if isinstance(module, lstmkit.layers._Recurrent):
            out, hidden = module(x, hx, lengths=sorted(LENGTHS, reverse=True))
        else:
            inp = pack_padded_sequence(x, torch.tensor(sorted(LENGTHS, reverse=True)),
                                       batch_first=batch_first)
            out, hidden = module(inp, hx)
            out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    else:
        out, hidden = module(x, hx)
    states = list(hidden) if kind == "lstm" else [hidden]
    return out, states


def forward_and_grads(module, kind, x, hx, mode, batch_first, upstream):
    out, states = run(module, kind, x, hx, mode, batch_first)
    g_out, g_h, g_c = upstream
    loss = (out * g_out).sum() + (states[0] * g_h).sum()
    if kind == "lstm":
        loss = loss + (states[1].sin() * g_c).sum()
    params = dict(module.named_parameters())
    leaves = [x]
    if hx is not None:
        leaves += list(hx) if kind == "lstm" else [hx]
    grads = torch.autograd.grad(loss, leaves + list(params.values()))
    named = dict(zip(params, grads[len(leaves):]))
    return out, states, list(grads[: len(leaves)]), named


def compare(kind, num_layers=1, bidirectional=False, batch_first=False, proj_size=0,
            mode="padded", with_hx=True, engine="python", dtype=torch.float64, bias=True):
    ref, ours = build(kind, num_layers, bidirectional, batch_first, proj_size, dtype, engine,
                      bias)
    atol = ATOL[dtype]
    gen = torch.Generator().manual_seed(1)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)  # noqa: E731
    unbatched = mode == "unbatched"
    if unbatched:
        x = rand(T, I)
    else:
        x = rand(B, T, I) if batch_first else rand(T, B, I)
    hx = None
    if with_hx:
        hx = [rand(*s) for s in state_shapes(kind, num_layers, bidirectional, proj_size,
                                             None if unbatched else B)]
    # upstream gradients: shapes from a torch forward
    with torch.no_grad():
        out_shape = run(ref, kind, x, None if hx is None else
                        (tuple(hx) if kind == "lstm" else hx[0]), mode, batch_first)[0].shape
    s_shapes = state_shapes(kind, num_layers, bidirectional, proj_size, None if unbatched else B)
    upstream = (rand(*out_shape), rand(*s_shapes[0]), rand(*s_shapes[-1]))

    results = []
    for module in (ref, ours):
        xl = x.clone().requires_grad_()
        hl = None
        if hx is not None:
            hl = [h.clone().requires_grad_() for h in hx]
            hl = tuple(hl) if kind == "lstm" else hl[0]
        results.append(forward_and_grads(module, kind, xl, hl, mode, batch_first, upstream))

    (o1, s1, g1, p1), (o2, s2, g2, p2) = results
    assert o2.dtype == dtype and o2.shape == o1.shape
    torch.testing.assert_close(o2, o1, atol=atol, rtol=0)
    assert len(s1) == len(s2)
    for a, b in zip(s1, s2):
        assert b.shape == a.shape
        torch.testing.assert_close(b, a, atol=atol, rtol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, atol=atol, rtol=0)
    assert p1.keys() == p2.keys()
    for name in p1:
        torch.testing.assert_close(p2[name], p1[name], atol=atol, rtol=0, msg=name)


def _cases():
    cases = []
    # every kind x engine x dtype x input form x initial state, one layer
    for kind, engine, dtype, mode, with_hx in itertools.product(
            KINDS, ENGINES, (torch.float32, torch.float64),
            ("padded", "packed", "lengths", "unbatched"), (False, True)):
        cases.append((kind, 1, False, False, 0, mode, with_hx, engine, dtype))
    # layers x bidirectional x input form (packed included), both engines
    for kind, layers, bidir, mode, engine in itertools.product(
            KINDS, (1, 2, 3), (False, True), ("padded", "packed", "lengths"), ENGINES):
        cases.append((kind, layers, bidir, False, 0, mode, True, engine, torch.float64))
    # batch_first x input form x bidirectional x layers
    for kind, mode, bidir, layers, engine in itertools.product(
            KINDS, ("padded", "packed", "lengths", "unbatched"), (False, True), (1, 2), ENGINES):
        cases.append((kind, layers, bidir, True, 0, mode, bool(layers - 1), engine,
                      torch.float64))
    # LSTM proj_size x bidirectional x layers x input form x initial state
    for proj, bidir, layers, mode, with_hx, engine in itertools.product(
            (1, 2), (False, True), (1, 2), ("padded", "packed", "lengths", "unbatched"),
            (False, True), ENGINES):
        cases.append(("lstm", layers, bidir, False, proj, mode, with_hx, engine, torch.float64))
    # float32 for the multi-layer bidirectional packed configurations
    for kind, engine in itertools.product(KINDS, ENGINES):
        cases.append((kind, 2, True, False, 0, "packed", True, engine, torch.float32))
    cases.append(("lstm", 2, True, True, 2, "packed", True, "python", torch.float32))
    cases.append(("lstm", 3, True, True, 3, "lengths", True, "python", torch.float64))
    return list(dict.fromkeys(cases))


def _case_id(case):
    kind, layers, bidir, bf, proj, mode, with_hx, engine, dtype = case
    return "-".join([kind, f"L{layers}", "bi" if bidir else "uni", "bf" if bf else "tf",
                     f"p{proj}", mode, "hx" if with_hx else "nohx", engine,
                     str(dtype).removeprefix("torch.")])


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_torch(case):
    kind, layers, bidir, bf, proj, mode, with_hx, engine, dtype = case
    compare(kind, layers, bidir, bf, proj, mode, with_hx, engine, dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["padded", "packed"])
def test_matches_torch_without_bias(kind, engine, mode):
    compare(kind, 2, True, False, 0, mode, True, engine, torch.float64, bias=False)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["padded", "packed", "unbatched"])
def test_matches_torch_projection_without_bias(engine, mode):
    compare("lstm", 2, True, False, 2, mode, True, engine, torch.float64, bias=False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_backward_accumulates_into_grad_like_torch(kind, engine):
    """loss.backward() twice: every .grad equals torch's, twice over, and no two alias."""
    ref, ours = build(kind, 2, True, engine=engine)
    x = torch.randn(T, B, I, dtype=torch.float64)
    for module in (ref, ours):
        for _ in range(2):
            out, hidden = module(x)
            h = hidden[0] if kind == "lstm" else hidden
            (out.pow(2).sum() + h.sum()).backward()
    params = dict(ours.named_parameters())
    for name, p in ref.named_parameters():
        torch.testing.assert_close(params[name].grad, p.grad, atol=1e-10, rtol=0, msg=name)
    ptrs = [p.grad.data_ptr() for p in ours.parameters()]
    assert len(set(ptrs)) == len(ptrs), "two parameters share one .grad tensor"
    ours.bias_ih_l0.grad.zero_()
    assert ours.bias_hh_l0.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_shorter_than_padding_matches_torch(kind, engine, batch_first):
    """lengths whose maximum is below the padded T: output keeps T steps, zero past each."""
    ref, ours = build(kind, 2, True, batch_first, engine=engine)
    lengths = [4, 4, 2, 1]
    x = torch.randn(*((B, T) if batch_first else (T, B)), I, dtype=torch.float64)
    h0 = torch.randn(*state_shapes(kind, 2, True, 0, B)[0], dtype=torch.float64)
    hx = (h0, h0.cos()) if kind == "lstm" else h0
    out, hid = ours(x, hx, lengths=lengths)
    r_out, r_hid = ref(pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first),
                       hx)
    r_out, _ = pad_packed_sequence(r_out, batch_first=batch_first, total_length=T)
    assert out.shape == r_out.shape
    torch.testing.assert_close(out, r_out, atol=1e-10, rtol=0)
    for a, b in zip(hid if kind == "lstm" else [hid], r_hid if kind == "lstm" else [r_hid]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind,which", [(k, w) for k in KINDS for w in ("output", "h_n", "c_n")
                                         if w != "c_n" or k == "lstm"])
@pytest.mark.parametrize("mode", ["padded", "packed"])
def test_gradient_from_one_result_only(kind, mode, which):
    """Only one of output / h_n / c_n feeds the loss; the others get no gradient at all."""
    ref, ours = build(kind, 2, True)
    x = torch.randn(T, B, I, dtype=torch.float64)
    grads = []
    for module in (ref, ours):
        xl = x.clone().requires_grad_()
        out, hid = run(module, kind, xl, None, mode, False)
        res = {"output": out, "h_n": hid[0], "c_n": hid[-1]}[which]
        params = list(module.parameters())
        grads.append(torch.autograd.grad(res.tanh().sum(), [xl, *params], allow_unused=True))
    for a, b in zip(*grads):
        if a is None:
            assert b is None or b.abs().max() == 0
        else:
            torch.testing.assert_close(b, a, atol=1e-10, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("steps,batch", [(1, 1), (1, 3), (4, 1)])
def test_single_step_and_single_sequence(engine, steps, batch):
    ref, ours = build("lstm", 2, True, proj_size=2, engine=engine)
    x = torch.randn(steps, batch, I, dtype=torch.float64)
    (o1, (h1, c1)), (o2, (h2, c2)) = ref(x), ours(x)
    for a, b in ((o1, o2), (h1, h2), (c1, c2)):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=0)


def test_lengths_output_zero_past_each_length():
    _, ours = build("lstm", 2, True)
    lengths = [5, 4, 2, 1]
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, (h, c) = ours(x, lengths=lengths)
    for b, n in enumerate(lengths):
        assert out[n:, b].abs().sum() == 0
        assert out[:n, b].abs().sum() > 0
    # each sequence run alone gives the same output and final states
    for b, n in enumerate(lengths):
        o1, (h1, c1) = ours(x[:n, b])
        torch.testing.assert_close(out[:n, b], o1, atol=1e-12, rtol=0)
        torch.testing.assert_close(h[:, b], h1, atol=1e-12, rtol=0)
        torch.testing.assert_close(c[:, b], c1, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_unsorted_packed_final_states_in_original_batch_order(bidirectional):
    _, ours = build("gru", 2, bidirectional)
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, h = ours(pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False))
    padded, lens = pad_packed_sequence(out)
    assert lens.tolist() == LENGTHS
    for b, n in enumerate(LENGTHS):
        o1, h1 = ours(x[:n, b])
        torch.testing.assert_close(padded[:n, b], o1, atol=1e-12, rtol=0)
        torch.testing.assert_close(h[:, b], h1, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ dropout
@pytest.mark.parametrize("kind", KINDS)
def test_dropout_python_engine_deterministic_and_differs_from_eval(kind):
    ref, ours = build(kind, 3, True, engine="python", dropout=0.5, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    ours.train()
    torch.manual_seed(123)
    o1, _ = ours(x)
    torch.manual_seed(123)
    o2, _ = ours(x)
    torch.manual_seed(124)
    o3, _ = ours(x)
    assert torch.equal(o1, o2)
    assert not torch.equal(o1, o3)
    ours.eval()
    ref.eval()
    o_eval, h_eval = ours(x)
    assert not torch.allclose(o1, o_eval)
    r_eval, rh_eval = ref(x)
    torch.testing.assert_close(o_eval, r_eval, atol=1e-10, rtol=0)
    for a, b in zip(h_eval if kind == "lstm" else [h_eval], rh_eval if kind == "lstm"
                    else [rh_eval]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_dropout_training_backprops_through_the_masks(engine):
    """Training with dropout between layers: the gradient through the masks is the derivative
    of what the forward computed (gradcheck in float64 with the seed fixed, so every evaluation
    draws the same masks), for the input, the initial states and every parameter."""
    _, ours = build("lstm", 2, False, engine=engine, dropout=0.3)
    ours.train()
    names = [n for n, _ in ours.named_parameters()]
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(2, B, H, dtype=torch.float64, requires_grad=True) for _ in range(2))

    def run(x, h0, c0, *params):
        torch.manual_seed(11)
        out, (h, c) = torch.func.functional_call(ours, dict(zip(names, params)), (x, (h0, c0)))
        return out, h, c

    params = [p.detach().clone().requires_grad_() for p in ours.parameters()]
    with torch.no_grad():
        dropped, _, _ = run(x, h0, c0, *params)
        kept, _ = ours.eval()(x, (h0, c0))
    assert not torch.allclose(dropped, kept)                # the masks act
    ours.train()
    assert torch.autograd.gradcheck(run, (x, h0, c0, *params), fast_mode=True)


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_torch_engine_training_equals_torch(kind):
    """engine="torch" runs torch's kernel, dropout masks included: same seed, same result."""
    ref, ours = build(kind, 3, True, engine="torch", dropout=0.5)
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(7)
    r_out, _ = ref(x)
    torch.manual_seed(7)
    o_out, _ = ours(x)
    assert torch.equal(o_out, r_out)


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_single_layer_is_a_no_op(kind):
    """Dropout only acts between layers: one layer in training mode equals eval mode."""
    cls = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU}.get(kind, lstmkit.RNN)
    kw = {"nonlinearity": kind[4:]} if kind.startswith("rnn") else {}
    ours = cls(I, H, 1, dropout=0.5, dtype=torch.float64, engine="python", **kw)
    x = torch.randn(T, B, I, dtype=torch.float64)
    ours.train()
    o_train, _ = ours(x)
    ours.eval()
    o_eval, _ = ours(x)
    torch.testing.assert_close(o_train, o_eval, atol=0, rtol=0)


# ------------------------------------------------------------------ bfloat16
@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_python_engine_close_to_float32(kind):
    _, ours = build(kind, 2, True, engine="python", dtype=torch.float32)
    x = torch.randn(T, B, I)
    out32, hid32 = ours(x)
    low = ours.to(torch.bfloat16)
    xb = x.to(torch.bfloat16).requires_grad_()
    out16, hid16 = low(xb)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), out32, atol=5e-2, rtol=0)
    h32 = hid32[0] if kind == "lstm" else hid32
    h16 = hid16[0] if kind == "lstm" else hid16
    torch.testing.assert_close(h16.float(), h32, atol=5e-2, rtol=0)
    out16.float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and torch.isfinite(xb.grad.float()).all()


# ------------------------------------------------------------------ engine="auto"
# Which engine auto ran is observed through its documented effect: its outputs (and, training,
# its gradients) are exactly those of the engine it names, and differ in their last bits (or,
# under autocast, in dtype) from the other engines'.
def _outputs(module, x):
    out, hid = module(x)
    return [out, *(hid if isinstance(hid, tuple) else [hid])]


def _results(module, x, training):
    """module's outputs on x; training: also the gradients of x and the parameters."""
    if not training:
        with torch.no_grad():
            return _outputs(module, x)
    module.zero_grad()
    xg = x.clone().requires_grad_()
    outputs = _outputs(module, xg)
    sum(o.float().sin().sum() for o in outputs).backward()
    return [o.detach() for o in outputs] + [xg.grad] + [p.grad for p in module.parameters()
                                                         if p.requires_grad]


def _engines_giving(module, x, training=False):
    """The engines auto chooses between (torch's and compiled, python where the compiled one
    is unavailable) whose named copy of module gives exactly module's results on x."""
    got = _results(module, x, training)
    names = ["torch", "compiled" if compiled.available() else "python"]
    same = set()
    for name in names:
        named = copy.deepcopy(module)
        named.engine = name
        want = _results(named, x, training)
        if all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(got, want)):
            same.add(name)
    return same


def _auto_wants(kind, x, training):
    """What auto should run a padded float32 call on x (T, B, I) on (the README's rules)."""
    if kind == "lstm" and x.shape[0] > AUTO_SHORT_T:
        return "compiled" if training and compiled.trains_faster(x) else "torch"
    return "compiled" if compiled.available() else "torch"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [1, AUTO_SHORT_T, AUTO_SHORT_T + 1, 20])
def test_auto_engine_runs_the_engine_it_names(kind, steps):
    """auto, inference: torch's fused kernel for a standard LSTM over more than AUTO_SHORT_T
    padded steps, else compiled; its outputs are exactly those of that engine alone, and close
    to torch.nn's. A packed LSTM batch runs compiled at any length."""
    ref, ours = build(kind, 2, True, engine="auto", dtype=torch.float32)
    x = torch.randn(steps, B, I)
    want = _auto_wants(kind, x, training=False)
    assert want == ("torch" if kind == "lstm" and steps > AUTO_SHORT_T or
                    not compiled.available() else "compiled")
    assert _engines_giving(ours, x) == {want}
    with torch.no_grad():
        for a, b in zip(_outputs(ours, x), _outputs(ref, x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if kind == "lstm" and compiled.available():
        packed = pack_padded_sequence(x, [steps] * B)
        named = copy.deepcopy(ours)
        named.engine = "compiled"
        with torch.no_grad():
            assert torch.equal(ours(packed)[0].data, named(packed)[0].data)


@pytest.mark.parametrize("steps", [AUTO_SHORT_T + 1, 15, 16, 40])
@pytest.mark.parametrize("batch", [1, 64, 65])
def test_auto_engine_trains_a_standard_lstm_compiled_where_faster(steps, batch):
    """auto, training (grad enabled, weights requiring it): a standard float32 LSTM of 16+ steps
    and at most 64 rows runs compiled on AVX-512 builds (compiled.trains_faster), else torch's
    kernel; outputs and gradients are exactly those of that engine alone. Frozen weights and
    an input without grad: inference, torch's kernel."""
    _, ours = build("lstm", 2, False, engine="auto", dtype=torch.float32)
    x = torch.randn(steps, batch, I)
    avx512 = compiled.available() and compiled.capability_flags()[0] == "AVX512"
    want = "compiled" if avx512 and steps >= 16 and batch <= 64 else "torch"
    assert compiled.trains_faster(x) == (want == "compiled")
    assert _engines_giving(ours, x, training=True) == {want}
    frozen = copy.deepcopy(ours).requires_grad_(False)
    assert _engines_giving(frozen, x) == {"torch"}
    assert _engines_giving(frozen, x, training=True) == {want}        # x requires grad


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [3, 20])
def test_auto_engine_under_autocast_as_without_it_and_for_traces(kind, steps):
    """Under bfloat16 autocast auto chooses as without it (torch's bfloat16 kernel for a
    standard LSTM over more than AUTO_SHORT_T steps, else compiled), in training too; a trace
    runs compiled (python without the extension)."""
    _, ours = build(kind, 1, False, engine="auto", dtype=torch.float32)
    x = torch.randn(steps, B, I)
    have = compiled.available()
    want = "torch" if (kind == "lstm" and steps > AUTO_SHORT_T) or not have else "compiled"
    assert _engines_giving(ours, x) == {want}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _engines_giving(ours, x, training=True) == {want}
    traced = ours.trace(x).output
    named = copy.deepcopy(ours)
    named.engine = "compiled" if have else "python"
    assert torch.equal(traced, named.trace(x).output)


def test_auto_engine_under_autocast_runs_large_standard_lstm_compiled():
    """With a per-step product of AUTO_BF16_MACS or more, the compiled engine's bfloat16
    products beat torch's bfloat16 LSTM: auto takes them (float32 outputs), and torch's kernel
    below that (bfloat16 outputs)."""
    torch.manual_seed(0)
    big = lstmkit.LSTM(512, 512)                  # 64 x 512 x 2048 = 67M per step at B = 64
    x = torch.randn(20, 64, 512)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        large, small = big(x)[0], big(x[:, :16])[0]   # 17M per step at B = 16
        if compiled.available():
            named = copy.deepcopy(big)
            named.engine = "compiled"
            assert large.dtype == torch.float32 and torch.equal(large, named(x)[0])
        else:
            assert large.dtype == torch.bfloat16
        assert small.dtype == torch.bfloat16


VARIANTS = [
    ("LSTM", {"peephole": True}),
    ("LSTM", {"coupled": True}),
    ("LSTM", {"peephole": True, "coupled": True}),
    ("LSTM", {"peephole": True, "proj_size": 2}),
    ("GRU", {"reset_after": False}),
]


@pytest.mark.parametrize("cls,kw", VARIANTS, ids=[f"{c}-{'-'.join(k)}" for c, k in VARIANTS])
def test_auto_engine_variant_runs_compiled(cls, kw):
    """auto runs a variant on the compiled engine (the python one without it): exactly the
    compiled engine's numbers, and the python engine's to float64 rounding."""
    torch.manual_seed(0)
    auto = getattr(lstmkit, cls)(I, H, 2, bidirectional=True, dtype=torch.float64,
                                 engine="auto", **kw)
    x = torch.randn(T, B, I, dtype=torch.float64)
    a, _ = auto(x)
    for engine in ("compiled", "python"):
        other = copy.deepcopy(auto)
        other.engine = engine
        b, _ = other(x)
        if engine == "compiled":
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cls,kw", VARIANTS, ids=[f"{c}-{'-'.join(k)}" for c, k in VARIANTS])
@pytest.mark.parametrize("packed", [False, True])
def test_variant_gradients_gradcheck(cls, kw, packed):
    torch.manual_seed(0)
    layer = getattr(lstmkit, cls)(2, 3, 2, bidirectional=True, dtype=torch.float64,
                                  engine="python", **kw)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    params = list(layer.parameters())
    lengths = torch.tensor([2, 4, 3])

    names = [n for n, _ in layer.named_parameters()]

    def f(x, *ps):
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
        out, hid = torch.func.functional_call(layer, dict(zip(names, ps)), (inp,))
        out = out.data if packed else out
        return (out, hid) if isinstance(hid, torch.Tensor) else (out, *hid)

    assert torch.autograd.gradcheck(f, (x, *params), atol=1e-7, fast_mode=True)
