"""sLSTM (lstmkit.cells.slstm, lstmkit.sLSTM): gradients against finite differences and against
autograd through the reference step, equality with the xlstm package's vanilla sLSTM on converted
parameters, the trace, the CLI, stateful chunks, the stabiliser and bad input."""

from __future__ import annotations

import json

import pytest
import torch

import lstmkit
from lstmkit.cells.slstm import SLSTMCellMath, from_xlstm
from lstmkit.engine import compiled
from lstmkit.engine.reference import reference_sequence
from lstmkit.layers import Recurrent, make_layer

DT = torch.float64
T, B, I, H = 4, 2, 3, 4
FORGET = ("sigmoid", "exp")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second thread only waits (and the suite shares the machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ENGINES = ("python", "compiled")


@pytest.fixture(params=ENGINES)
def engine(request):
    """Each test that takes it runs on both engines; the compiled one needs the extension
    (skipped without a C++ compiler)."""
    if request.param == "compiled":
        request.getfixturevalue("ext")
    return request.param


def _layer(num_heads=1, forget_gate="sigmoid", scale=0.8, seed=0, **kwargs):
    torch.manual_seed(seed)
    layer = lstmkit.sLSTM(I, H, num_heads=num_heads, forget_gate=forget_gate, dtype=DT, **kwargs)
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-scale, scale)
    return layer


def _state(LD=1, batch=B, requires_grad=False):
    """A random state (h, c, n, m) with n >= 1, as an sLSTM reaches from any start."""
    h, c, m = (torch.randn(LD, batch, H, dtype=DT) for _ in range(3))
    n = torch.rand(LD, batch, H, dtype=DT) + 1
    return tuple(s.requires_grad_(requires_grad) for s in (h.tanh(), c, n, m))


def _flat(result):
    out, state = result
    return (out, *state)


@pytest.mark.parametrize("forget_gate", FORGET)
@pytest.mark.parametrize("num_heads", [1, 2])
def test_gradcheck_of_the_layer_input_weights_and_state(num_heads, forget_gate, engine):
    """Every output (the h sequence and the final h, c, n, m) against finite differences, from a
    random state and from the zero state (the first-step rule m_1 = i~_1)."""
    layer = _layer(num_heads, forget_gate, engine=engine)
    names = [n for n, _ in layer.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    state = _state(requires_grad=True)

    def from_state(x, h, c, n, m, *w):
        return _flat(torch.func.functional_call(layer, dict(zip(names, w)), (x, (h, c, n, m))))

    def from_zero(x, *w):
        return _flat(torch.func.functional_call(layer, dict(zip(names, w)), (x,)))

    assert torch.autograd.gradcheck(from_state, (x, *state, *leaves))
    assert torch.autograd.gradcheck(from_zero, (x, *leaves))


def test_gradcheck_two_layers_bidirectional_with_lengths(engine):
    layer = _layer(2, "sigmoid", num_layers=2, bidirectional=True, engine=engine)
    names = [n for n, _ in layer.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(T, 3, I, dtype=DT, requires_grad=True)

    def f(x, *w):
        return _flat(torch.func.functional_call(layer, dict(zip(names, w)), (x,),
                                                {"lengths": [4, 3, 1]}))

    assert torch.autograd.gradcheck(f, (x, *leaves), fast_mode=True)


@pytest.mark.parametrize("regulariser", ["zoneout", "recurrent_dropout", "weight_drop"])
def test_gradcheck_with_the_regularisers(regulariser, engine):
    """The engine's masks act on all four states (zoneout) or on h_{t-1} and W_hh; the
    seed is fixed so that every call draws the same masks."""
    torch.manual_seed(0)
    layer = Recurrent(I, H, cell="slstm", num_heads=2, dtype=DT, engine=engine,
                      **{regulariser: 0.3})
    names = [n for n, _ in layer.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)

    def f(x, *w):
        torch.manual_seed(5)
        return _flat(torch.func.functional_call(layer, dict(zip(names, w)), (x,)))

    assert torch.autograd.gradcheck(f, (x, *leaves))


def test_second_derivatives_through_the_reference_step(engine):
    layer = _layer(2, "exp", engine=engine)
    names = [n for n, _ in layer.named_parameters()]
    w = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(3, B, I, dtype=DT, requires_grad=True)
    f = lambda x, w_ih: torch.func.functional_call(  # noqa: E731
        layer, dict(zip(names, [w_ih, *w[1:]])), (x,))[0]
    assert torch.autograd.gradgradcheck(f, (x, w[0]))


@pytest.mark.parametrize("forget_gate", FORGET)
@pytest.mark.parametrize("num_heads", [1, 4])
def test_hand_backward_equals_autograd_through_the_reference_step(num_heads, forget_gate):
    """The python engine's hand-written BPTT against autograd over ``reference_step``, for a
    loss on the outputs and on every final state, from a random state and from zeros."""
    torch.manual_seed(3)
    layer = lstmkit.sLSTM(I, 8, num_heads=num_heads, forget_gate=forget_gate, dtype=DT,
                          engine="python")
    x = torch.randn(6, B, I, dtype=DT, requires_grad=True)
    h, c, n, m = (torch.randn(1, B, 8, dtype=DT) for _ in range(4))
    for state in [(h, c, n.abs() + 1, m), None]:
        leaves = [s.clone().requires_grad_() for s in state] if state else None
        out, final = layer(x, leaves)
        wo = torch.randn_like(out)
        ws = [torch.randn_like(s) for s in final]
        loss = (out * wo).sum() + sum((s * w).sum() for s, w in zip(final, ws))
        inputs = [x, *layer.parameters(), *(leaves or [])]
        hand = torch.autograd.grad(loss, inputs)

        zeros = [torch.zeros(B, 8, dtype=DT)] * 4
        hist = reference_sequence(layer.cell, x, [s[0] for s in leaves] if leaves else zeros,
                                  layer.weights(0))
        ref_loss = (hist[0][1:] * wo).sum() + sum((h_[-1] * w[0]).sum()
                                                   for h_, w in zip(hist, ws))
        want = torch.autograd.grad(ref_loss, inputs)
        for got, exp in zip(hand, want):
            torch.testing.assert_close(got, exp, atol=1e-12, rtol=1e-10)


# ---------------------------------------------------------------------- the xlstm package
def _package_layer(num_heads, hidden=8, seed=0):
    from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig

    torch.manual_seed(seed)
    cfg = sLSTMLayerConfig(embedding_dim=hidden, num_heads=num_heads, conv1d_kernel_size=0,
                           backend="vanilla", dtype="float32")
    layer = sLSTMLayer(cfg).double()
    with torch.no_grad():
        for p in layer.parameters():          # zeros (its recurrent init) would hide layouts
            p.normal_(0, 0.5)
    return layer


def _package_run(layer, x, state):
    """The package's vanilla sLSTM over x (N, L, H): its layer's four head-wise projections,
    concatenated as its forward does, then its cell (the pointwise forward step by step);
    returns (y (N, L, H), state (4, N, H))."""
    cell = layer.slstm_cell
    i, f, z, o = layer.fgate(x), layer.igate(x), layer.zgate(x), layer.ogate(x)
    y, state = cell(torch.cat([i, f, z, o], -1), state=state)          # y (N, K, L, DH)
    return y.transpose(1, 2).reshape(x.shape), state


def test_the_package_has_the_sigmoid_forget_gate_only():
    """Why the equivalence below covers forget_gate="sigmoid" only: the package's sLSTM step
    takes log f_t = logsigmoid(f~_t); its other pointwise function is the plain LSTM."""
    import inspect

    from xlstm.blocks.slstm.src.vanilla import slstm_pointwise_function_registry

    assert set(slstm_pointwise_function_registry) == {"slstm", "lstm"}
    assert "logsigmoid(fraw)" in inspect.getsource(slstm_pointwise_function_registry["slstm"])


@pytest.mark.parametrize("num_heads", [1, 4])
def test_equals_the_xlstm_package_on_converted_parameters(num_heads):
    """Outputs and final (h, c, n, m) agree with the package's vanilla sLSTM in float64, from
    the zero state and, in a second chunk, from the state the first one returned."""
    pkg = _package_layer(num_heads)
    ours = lstmkit.sLSTM(8, 8, num_heads=num_heads, dtype=DT)
    ours.load_state_dict(from_xlstm(pkg))
    x1, x2 = torch.randn(3, 7, 8, dtype=DT), torch.randn(3, 5, 8, dtype=DT)
    with torch.no_grad():
        y1, s1 = _package_run(pkg, x1, None)
        y2, s2 = _package_run(pkg, x2, s1)
        out1, state1 = ours(x1.transpose(0, 1))
        out2, state2 = ours(x2.transpose(0, 1), state1)
    for y, s, out, state in [(y1, s1, out1, state1), (y2, s2, out2, state2)]:
        torch.testing.assert_close(out.transpose(0, 1), y, atol=1e-10, rtol=0)
        assert len(state) == 4
        for ours_s, theirs in zip(state, s.unbind(0)):
            torch.testing.assert_close(ours_s[0], theirs, atol=1e-10, rtol=0)
    assert (state1[2] > 0).all()          # the second chunk ran the max branch everywhere
    # the package's whole layer is its group norm over our output
    with torch.no_grad():
        full = pkg(x1)
        normed = pkg.group_norm(out1.transpose(0, 1).reshape(3, 7, num_heads, -1)
                                .transpose(1, 2)).transpose(1, 2).reshape(3, 7, -1)
    torch.testing.assert_close(normed, full, atol=1e-10, rtol=0)


def test_a_batch_where_some_units_start_fresh():
    """The package tests n == 0 over the whole batch, lstmkit unit by unit (from_xlstm's
    docstring): from a state where one sequence starts fresh (c = n = 0) and the other does
    not, h and c / n agree while c, n, m themselves differ by the free factor exp(m)."""
    pkg = _package_layer(4)
    ours = lstmkit.sLSTM(8, 8, num_heads=4, dtype=DT)
    ours.load_state_dict(from_xlstm(pkg))
    state = torch.randn(4, 2, 8, dtype=DT)
    state[2] = state[2].abs() + 1
    state[1:3, 0] = 0                                  # sequence 0: c = n = 0, any h and m
    state[3, 0] = 3.0                # large enough that the package's max keeps log f + m
    x = torch.randn(2, 5, 8, dtype=DT)
    with torch.no_grad():
        y, s = _package_run(pkg, x, state)
        out, (h, c, n, m) = ours(x.transpose(0, 1), tuple(v.unsqueeze(0) for v in state))
    torch.testing.assert_close(out.transpose(0, 1), y, atol=1e-10, rtol=0)
    torch.testing.assert_close(h[0], s[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(c[0] / n[0], s[1] / s[2], atol=1e-10, rtol=0)
    torch.testing.assert_close(m[0, 1], s[3, 1], atol=1e-10, rtol=0)   # the other sequence
    assert (m[0, 0] - s[3, 0]).abs().max() > 1e-3


def test_from_xlstm_refuses_a_layer_with_a_convolution():
    from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig

    layer = sLSTMLayer(sLSTMLayerConfig(embedding_dim=8, num_heads=2, conv1d_kernel_size=4,
                                        backend="vanilla", dtype="float32"))
    with pytest.raises(ValueError, match="conv1d_kernel_size=4"):
        from_xlstm(layer)


# ---------------------------------------------------------------------- layer contract
def test_parameters_hold_only_the_head_blocks():
    layer = lstmkit.sLSTM(5, 8, num_heads=4, num_layers=2)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {"weight_ih_l0": (32, 5), "weight_hh_l0": (32, 2), "bias_ih_l0": (32,),
                      "bias_hh_l0": (32,), "weight_ih_l1": (32, 8), "weight_hh_l1": (32, 2),
                      "bias_ih_l1": (32,), "bias_hh_l1": (32,)}
    assert isinstance(layer, Recurrent) and isinstance(make_layer("slstm", 5, 8), Recurrent)


def test_the_head_wise_product_is_a_block_diagonal_matrix():
    cell = SLSTMCellMath(8, num_heads=4)
    w_hh = torch.randn(32, 2, dtype=DT)
    h = torch.randn(3, 8, dtype=DT)
    dense = torch.cat([torch.block_diag(*w_hh[g * 8:(g + 1) * 8].split(2)) for g in range(4)])
    torch.testing.assert_close(cell.recurrent_product(h, w_hh), h @ dense.t())


def test_stepping_with_the_returned_state_equals_one_call(engine):
    """Unlike the package's cell ``step`` (which hands back the state it was given), the layer
    returns the new state: a loop of one-step calls equals one call, outputs, states and
    gradients (the state passed on without detaching: BPTT through the chunks)."""
    layer = _layer(2, "sigmoid", num_layers=2, engine=engine)
    x = torch.randn(6, B, I, dtype=DT, requires_grad=True)
    out, final = layer(x)
    g_whole = torch.autograd.grad(out.sum() + final[1].sum(), [x, *layer.parameters()])
    state, outs = None, []
    for t in range(6):
        o, state = layer(x[t:t + 1], state)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs), out, atol=1e-13, rtol=0)
    for a, b in zip(state, final):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=0)
    g_steps = torch.autograd.grad(torch.cat(outs).sum() + state[1].sum(),
                                  [x, *layer.parameters()])
    for a, b in zip(g_steps, g_whole):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_batch_first_and_unbatched_input():
    layer = _layer(2, "exp", batch_first=True)
    x = torch.randn(B, T, I, dtype=DT)
    out, state = layer(x)
    assert out.shape == (B, T, H) and all(s.shape == (1, B, H) for s in state)
    time_major, _ = lstmkit.sLSTM.forward(_layer(2, "exp"), x.transpose(0, 1))
    torch.testing.assert_close(out, time_major.transpose(0, 1))
    single, single_state = layer(x[0])                      # (L, H_in): unbatched
    torch.testing.assert_close(single, out[0])
    assert all(s.shape == (1, H) for s in single_state)


# ---------------------------------------------------------------------- trace and CLI
def test_the_trace_records_gates_and_the_states_c_n_m(engine):
    layer = _layer(2, "sigmoid", engine=engine)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    trace = layer.trace(x)
    step = trace.steps[0][0]
    assert set(step.gates) == {"i", "f", "z", "o"}
    assert set(step.states) == {"h", "c", "n", "m"}
    zeros = [torch.zeros(B, H, dtype=DT)] * 4
    hist = reference_sequence(layer.cell, x, zeros, layer.weights(0))
    for k, name in enumerate(("h", "c", "n", "m")):
        torch.testing.assert_close(step.states[name], hist[k][1:].detach())
    torch.testing.assert_close(step.c, step.states["c"])
    g = step.gates
    c, n = step.states["c"], step.states["n"]
    c_prev = torch.cat([torch.zeros(1, B, H, dtype=DT), c[:-1]])
    n_prev = torch.cat([torch.zeros(1, B, H, dtype=DT), n[:-1]])
    # the stored gates are the stabilised i'_t, f'_t that update the states
    torch.testing.assert_close(c, g["f"] * c_prev + g["i"] * g["z"])
    torch.testing.assert_close(n, g["f"] * n_prev + g["i"])
    torch.testing.assert_close(step.h, g["o"] * c / n)
    assert (g["i"] <= 1).all() and (g["f"] <= 1).all() and (n >= 1).all()
    assert (g["i"][0] == 1).all()                              # m_1 = i~_1 from the zero state
    trace.output.sum().backward()
    assert step.grad_h.shape == (T, B, H) and x.grad is not None


def test_cli_trains_an_slstm(tmp_path, capsys):
    from lstmkit.cli import build_parser, main

    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "slstm" in help_text
    run = tmp_path / "run"
    main(["train", "adding", "--cell", "slstm", "--out", str(run), "--length", "8", "--epochs",
          "1", "--steps-per-epoch", "3", "--hidden", "8", "--batch-size", "8"])
    assert json.loads((run / "config.json").read_text())["cell"] == "slstm"
    main(["evaluate", str(run)])
    assert "MSE" in capsys.readouterr().out


# ---------------------------------------------------------------------- bad input
def test_num_heads_must_divide_hidden_size():
    with pytest.raises(ValueError, match="num_heads must divide hidden_size; got num_heads=3"):
        lstmkit.sLSTM(3, 8, num_heads=3)
    with pytest.raises(ValueError, match="num_heads must be a positive int, got 0"):
        lstmkit.sLSTM(3, 8, num_heads=0)
    with pytest.raises(ValueError, match="num_heads must divide"):
        make_layer("slstm", 3, 8, num_heads=3)


def test_unknown_forget_gate_is_named():
    with pytest.raises(ValueError, match=r"forget_gate must be one of \('sigmoid', 'exp'\), "
                                         r"got 'tanh'"):
        lstmkit.sLSTM(3, 8, forget_gate="tanh")


def test_bad_states_are_named():
    layer = lstmkit.sLSTM(I, H, dtype=DT)
    x = torch.randn(T, B, I, dtype=DT)
    h, c, n, m = _state()
    with pytest.raises(ValueError, match=r"state as a tuple \(h, c, n, m\) of 4 tensors, got 2"):
        layer(x, (h, c))
    with pytest.raises(TypeError, match="state as a tuple"):
        layer(x, h)
    with pytest.raises(RuntimeError, match=r"expected n_0 of shape \(1, 2, 4\).*got \(1, 2, 3\)"):
        layer(x, (h, c, n[..., :3], m))
    generic = Recurrent(I, H, cell="slstm", dtype=DT)
    with pytest.raises(RuntimeError, match=r"expected hx as a tuple \(h_0, c_0, n_0, m_0\)"):
        generic(x, (h, c, n))


# ---------------------------------------------------------------------- stabiliser and NaN
@pytest.mark.parametrize("forget_gate", FORGET)
def test_huge_pre_activations_give_finite_outputs_and_gradients(forget_gate, engine):
    """Pre-activations of order 1e4 (exp(1e4) overflows float64): the stabilised step stays
    finite, and |h_t| <= 1, n_t >= 1."""
    layer = _layer(2, forget_gate, engine=engine)
    x = (torch.randn(8, B, I, dtype=DT) * 1e4).requires_grad_()
    out, (h, c, n, m) = layer(x)
    assert torch.isfinite(out).all() and torch.isfinite(m).all() and m.abs().max() > 1e3
    assert (out.abs() <= 1).all() and (n >= 1).all()
    (out.sum() + c.sum() + n.sum()).backward()
    grads = [x.grad, *(p.grad for p in layer.parameters())]
    assert all(torch.isfinite(g).all() for g in grads)
    out32, _ = lstmkit.sLSTM(I, H, num_heads=2, forget_gate=forget_gate,
                             engine=engine)(x.detach().float())
    assert torch.isfinite(out32).all()


def test_nan_input_gives_nan_output_for_that_sequence_only(engine):
    """Documented choice (lstmkit.cells.slstm): a NaN makes its sequence NaN from that step on,
    as torch's LSTM does; the other sequences of the batch are untouched."""
    layer = _layer(2, "sigmoid", engine=engine)
    x = torch.randn(T, B, I, dtype=DT)
    clean, _ = layer(x)
    x[2, 0, 1] = float("nan")
    out, state = layer(x)
    assert torch.isnan(out[2:, 0]).all() and torch.isfinite(out[:2, 0]).all()
    torch.testing.assert_close(out[:, 1], clean[:, 1])
    assert all(torch.isnan(s[0, 0]).all() for s in state)


# ---------------------------------------------------------------------- the compiled engine
def _all_grads(layer, x, state):
    """(outputs, final states, gradients of x, every parameter and the state) for a loss on
    the outputs and every final state."""
    torch.manual_seed(11)
    leaves = [s.clone().requires_grad_() for s in state] if state else []
    out, final = layer(x, tuple(leaves) if leaves else None)
    weights = [torch.randn(t.shape, dtype=DT).to(t.dtype) for t in (out, *final)]
    loss = sum((t * w).sum() for t, w in zip((out, *final), weights))
    grads = torch.autograd.grad(loss, [x, *layer.parameters(), *leaves])
    return [out, *final, *grads]


@pytest.mark.parametrize("forget_gate", FORGET)
@pytest.mark.parametrize("num_heads", [1, 4])
def test_compiled_equals_python_in_float64(ext, num_heads, forget_gate):
    """Outputs, states and every gradient, to 1e-12: from zeros and from a random state, two
    layers, both directions, and a padded batch with lengths."""
    torch.manual_seed(4)
    layer = lstmkit.sLSTM(3, 8, num_heads=num_heads, forget_gate=forget_gate, num_layers=2,
                          bidirectional=True, dtype=DT)
    x = torch.randn(7, 3, 3, dtype=DT, requires_grad=True)
    assert compiled.fallback_reason(layer.cell, x) is None      # it runs compiled, not python
    h, c, m = (torch.randn(4, 3, 8, dtype=DT) for _ in range(3))
    n = torch.rand(4, 3, 8, dtype=DT) + 1
    for state in [None, (h, c, n, m)]:
        got = {}
        for engine in ENGINES:
            layer.engine = engine
            got[engine] = _all_grads(layer, x, state)
        for a, b in zip(got["compiled"], got["python"]):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    got = {}
    for engine in ENGINES:
        layer.engine = engine
        out, final = layer(x, lengths=[7, 5, 2])
        g = torch.autograd.grad(out.sum() + final[1].sum(), [x, *layer.parameters()])
        got[engine] = [out, *final, *g]
    for a, b in zip(got["compiled"], got["python"]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("num_heads", [1, 4])
def test_compiled_float32_against_float64(ext, num_heads):
    """float32 on the compiled engine (brgemm steps where it has them) against the float64
    result on the same weights."""
    torch.manual_seed(5)
    layer = lstmkit.sLSTM(16, 32, num_heads=num_heads, dtype=DT)
    x = torch.randn(20, 5, 16, dtype=DT, requires_grad=True)
    want = _all_grads(layer, x, None)
    layer32 = lstmkit.sLSTM(16, 32, num_heads=num_heads, engine="compiled")
    layer32.load_state_dict(layer.state_dict())
    got = _all_grads(layer32, x.detach().float().requires_grad_(), None)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, atol=2e-4, rtol=2e-4)
