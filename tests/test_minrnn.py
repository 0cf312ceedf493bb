"""minGRU and minLSTM: the log-space scan against the step loop and a plain autograd loop, the
step loop in C++ (csrc/minrnn.cpp) against the python one, the hand-written backward by gradcheck,
and the layers against the paper's equations written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit.cells import minrnn

KINDS = ("mingru", "minlstm")
LAYERS = {"mingru": lstmkit.minGRU, "minlstm": lstmkit.minLSTM}
F64 = {"dtype": torch.float64}
I, H, B = 3, 4, 2


def pre_activations(kind, T, scale=3.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, minrnn.num_gates(kind) * H, generator=gen, **F64) * scale


def initial(which, seed=1):
    """h_0 (B, H) of each kind the scans must take: none, positive, zero, mixed sign."""
    if which is None:
        return None
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(B, H, generator=gen, **F64)
    return {"positive": h.abs() + 0.1, "zero": h * 0, "signed": h}[which]


# ---------------------------------------------------------------- gates
def test_g_is_positive_continuous_and_log_g_is_its_log():
    x = torch.cat([torch.linspace(-40, 40, 801, **F64), torch.tensor([0.0, -1e-12, 1e-12], **F64)])
    assert (minrnn.g(x) > 0).all()
    torch.testing.assert_close(minrnn.g(torch.tensor([-1e-12, 0.0], **F64)),
                               torch.tensor([0.5, 0.5], **F64))
    torch.testing.assert_close(minrnn.log_g(x), torch.log(minrnn.g(x)), atol=1e-12, rtol=1e-12)
    assert (minrnn.g(torch.tensor([2.0, -2.0])) == torch.tensor([2.5, torch.sigmoid(
        torch.tensor(-2.0)).item()])).all()


@pytest.mark.parametrize("kind", KINDS)
def test_log_coefficients_are_the_logs_of_the_gates_and_stay_finite(kind):
    pre = pre_activations(kind, 9)
    a, b = minrnn.coefficients(kind, pre)
    log_a, log_b = minrnn.log_coefficients(kind, pre)
    torch.testing.assert_close(log_a, a.log(), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(log_b, b.log(), atol=1e-12, rtol=1e-12)
    assert ((a > 0) & (a < 1)).all() and (b > 0).all()
    # saturated gates in float32: a or b rounds to 0, its log from the pre-activations does not
    big = torch.full((1, 1, minrnn.num_gates(kind) * H), 120.0)
    for sign in (1, -1):
        log_a, log_b = minrnn.log_coefficients(kind, sign * big)
        assert torch.isfinite(log_a).all() and torch.isfinite(log_b).all()
    log_a, _ = minrnn.log_coefficients("mingru", torch.full((1, 1, 2), 120.0))
    assert log_a.item() == pytest.approx(-120.0)          # a = 1 - z = sigma(-120) ~ e^-120


def test_minlstm_normalised_gates_sum_to_one():
    pre = pre_activations("minlstm", 5)
    pre_f, pre_i, _ = pre.chunk(3, -1)
    f, i = torch.sigmoid(pre_f), torch.sigmoid(pre_i)
    a, _ = minrnn.coefficients("minlstm", pre)
    torch.testing.assert_close(a, f / (f + i))
    log_a, log_b = minrnn.log_coefficients("minlstm", pre)
    i_prime = (log_b - minrnn.log_g(pre.chunk(3, -1)[2])).exp()
    torch.testing.assert_close(log_a.exp() + i_prime, torch.ones_like(a))


# ---------------------------------------------------------------- the scans
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [1, 2, 7, 64, 65, 150])
@pytest.mark.parametrize("h0", [None, "positive", "zero", "signed"])
def test_parallel_and_sequential_scans_equal_the_loop(kind, T, h0):
    pre = pre_activations(kind, T, seed=T)
    a, b = minrnn.coefficients(kind, pre)
    log_a, log_b = minrnn.log_coefficients(kind, pre)
    h0 = initial(h0)
    expected = minrnn.reference_scan(a, b, h0)
    torch.testing.assert_close(minrnn.sequential_scan(a, b, h0), expected, atol=1e-10, rtol=0)
    for chunk in (1, 3, 64, 1000):
        torch.testing.assert_close(minrnn.parallel_scan(log_a, log_b, h0, chunk), expected,
                                   atol=1e-10, rtol=0)


def test_negative_initial_state_follows_the_recurrence():
    """h_0 < 0 is taken as it is (h_t is linear in h_0), not rejected or clamped."""
    a = torch.full((3, 1, 1), 0.5, **F64)
    b = torch.full((3, 1, 1), 1.0, **F64)
    h0 = torch.full((1, 1), -8.0, **F64)
    h = minrnn.parallel_scan(a.log(), b.log(), h0)
    torch.testing.assert_close(h.flatten(), torch.tensor([-3.0, -0.5, 0.75], **F64))


@pytest.mark.parametrize("with_h0", [False, True])
def test_gradcheck_parallel_scan(with_h0):
    pre = pre_activations("minlstm", 7)
    log_a, log_b = (t.detach().requires_grad_() for t in minrnn.log_coefficients("minlstm", pre))
    inputs = (log_a, log_b) + ((initial("signed").requires_grad_(),) if with_h0 else ())
    assert torch.autograd.gradcheck(lambda *x: minrnn.parallel_scan(*x, chunk=3), inputs)


@pytest.mark.parametrize("with_h0", [False, True])
def test_gradcheck_sequential_scan(with_h0):
    a, b = (t.detach().requires_grad_() for t in minrnn.coefficients("mingru",
                                                                      pre_activations("mingru", 6)))
    inputs = (a, b) + ((initial("signed").requires_grad_(),) if with_h0 else ())
    assert torch.autograd.gradcheck(minrnn.sequential_scan, inputs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("h0", [None, "signed"])
def test_scan_gradients_equal_autograd_through_the_loop(kind, h0):
    """From the pre-activations to a loss on every step: parallel, sequential and the plain
    loop differentiated by autograd give the same gradients."""
    T = 70
    grad_out = torch.randn(T, B, H, generator=torch.Generator().manual_seed(5), **F64)
    results = []
    for form in ("reference", "sequential", "parallel"):
        pre = pre_activations(kind, T).requires_grad_()
        h_init = initial(h0)
        h_init = None if h_init is None else h_init.requires_grad_()
        if form == "parallel":
            h = minrnn.parallel_scan(*minrnn.log_coefficients(kind, pre), h_init, chunk=16)
        else:
            scan = minrnn.reference_scan if form == "reference" else minrnn.sequential_scan
            h = scan(*minrnn.coefficients(kind, pre), h_init)
        h.backward(grad_out)
        results.append((pre.grad, None if h_init is None else h_init.grad))
    for got in results[1:]:
        for g, want in zip(got, results[0]):
            if want is not None:
                torch.testing.assert_close(g, want, atol=1e-10, rtol=0)


def test_float32_keeps_precision_over_long_sequences():
    """The chunked log-space scan keeps |a*_t| small, so float32 h stays within 2e-5 of the
    float64 result over T = 3000 steps (|a*_T| ~ 2400); one chunk over all T loses ~30x more."""
    pre = pre_activations("mingru", 3000, scale=1.0)
    expected = minrnn.reference_scan(*minrnn.coefficients("mingru", pre))
    log_a, log_b = minrnn.log_coefficients("mingru", pre.float())
    error = lambda h: ((h.double() - expected).abs() / expected).max().item()  # noqa: E731
    assert error(minrnn.parallel_scan(log_a, log_b)) < 2e-5
    assert error(minrnn.parallel_scan(log_a, log_b, chunk=3000)) > 1e-4


# the forms of ``recurrence``: the log-space scan, the python step loop, the step loop in C++
FORMS = {"parallel": {"parallel": True}, "python": {"compiled": False},
         "compiled": {"compiled": True}}


def skip_unbuilt(form):
    if form == "compiled" and minrnn._extension() is None:
        pytest.skip("lstmkit's compiled extension is not built")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("with_h0", [False, True])
def test_gradcheck_recurrence(kind, form, with_h0):
    """The gates' and the scan's backward by hand, from h back to the pre-activations."""
    skip_unbuilt(form)
    pre = pre_activations(kind, 6).requires_grad_()
    inputs = (pre,) + ((initial("signed").requires_grad_(),) if with_h0 else ())
    assert torch.autograd.gradcheck(
        lambda p, *h0: minrnn.recurrence(kind, p, *h0, chunk=4, **FORMS[form]), inputs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", list(FORMS))
def test_recurrence_equals_autograd_through_the_equations(kind, form):
    skip_unbuilt(form)
    T = 50
    grad_out = torch.randn(T, B, H, generator=torch.Generator().manual_seed(7), **F64)
    results = []
    for by_hand in (False, True):
        pre = pre_activations(kind, T, scale=4.0).requires_grad_()
        h0 = initial("signed").requires_grad_()
        if by_hand:
            h = minrnn.recurrence(kind, pre, h0, chunk=16, **FORMS[form])
        else:
            h = minrnn.reference_scan(*minrnn.coefficients(kind, pre), h0)
        h.backward(grad_out)
        results.append((h.detach(), pre.grad, h0.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_saturated_gates_stay_finite_in_float32(kind):
    """Pre-activations far out (f_t and i_t both round to 0 in float32): no 0/0, finite
    gradients, and every form agrees."""
    pre = torch.full((5, 1, minrnn.num_gates(kind) * H), -150.0, requires_grad=True)
    outs = []
    for form in FORMS:
        if form == "compiled" and minrnn._extension() is None:
            continue
        h = minrnn.recurrence(kind, pre, **FORMS[form])
        (grad,) = torch.autograd.grad(h.sum(), pre)
        assert torch.isfinite(h).all() and torch.isfinite(grad).all()
        outs.append(h)
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0])


# ---------------------------------------------------------------- the layers
def paper_loop(layer, x, h0=None):
    """The paper's equations step by step, written out from the parameters (time-major x)."""
    kind, L, D, Hd = layer.kind, layer.num_layers, layer.num_directions, layer.hidden_size
    inp, finals = x, []
    for k in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            w, bias = getattr(layer, "weight_ih" + sfx), getattr(layer, "bias_ih" + sfx, None)
            h = inp.new_zeros(inp.shape[1], Hd) if h0 is None else h0[k * D + d]
            steps = range(inp.shape[0] - 1, -1, -1) if d else range(inp.shape[0])
            hs = {}
            for t in steps:
                pre = F.linear(inp[t], w, bias)
                if kind == "mingru":
                    z, h_tilde = torch.sigmoid(pre[:, :Hd]), minrnn.g(pre[:, Hd:])
                    h = (1 - z) * h + z * h_tilde
                else:
                    f, i = torch.sigmoid(pre[:, :Hd]), torch.sigmoid(pre[:, Hd:2 * Hd])
                    h_tilde = minrnn.g(pre[:, 2 * Hd:])
                    h = f / (f + i) * h + i / (f + i) * h_tilde
                hs[t] = h
            finals.append(h)
            outs.append(torch.stack([hs[t] for t in range(inp.shape[0])]))
        inp = torch.cat(outs, -1)
    return inp, torch.stack(finals)


def make(kind, **kw):
    torch.manual_seed(0)
    return LAYERS[kind](I, H, dtype=torch.float64, **kw)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["parallel", "sequential", "auto"])
@pytest.mark.parametrize("config", [{}, {"num_layers": 2, "bidirectional": True},
                                    {"bias": False, "num_layers": 2}])
def test_layer_equals_the_papers_equations(kind, mode, config):
    layer = make(kind, mode=mode, **config)
    x = torch.randn(9, B, I, **F64) * 2
    for h0 in (None, torch.randn(layer.num_layers * layer.num_directions, B, H, **F64)):
        out, h_n = layer(x, h0)
        want_out, want_h = paper_loop(layer, x, h0)
        torch.testing.assert_close(out, want_out, atol=1e-10, rtol=0)
        torch.testing.assert_close(h_n, want_h, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_inference_without_the_graph_gives_the_same_output(kind, mode):
    layer = make(kind, mode=mode, num_layers=2, bidirectional=True)
    x = torch.randn(33, B, I, **F64)
    out, h_n = layer(x)
    assert out.grad_fn is not None
    with torch.no_grad():
        out_ng, h_ng = layer(x)
    torch.testing.assert_close(out_ng, out.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(h_ng, h_n.detach(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_runs_the_recurrence_in_float32(kind):
    layer = make(kind).float()
    x = torch.randn(300, B, I)
    want, _ = layer(x)
    half = make(kind).to(torch.bfloat16)
    for mode in ("parallel", "sequential"):
        half.mode = mode
        with torch.autocast("cpu", torch.bfloat16):
            got_autocast, _ = layer(x)
        got, _ = half(x.to(torch.bfloat16))
        for out in (got, got_autocast):
            assert out.dtype == torch.bfloat16
            torch.testing.assert_close(out.float(), want, atol=0.03, rtol=0.02)
    with torch.autocast("cpu", torch.bfloat16):         # bfloat16 from a layer before
        out, _ = layer(x.to(torch.bfloat16), torch.zeros(1, B, H, dtype=torch.bfloat16))
    torch.testing.assert_close(out.float(), want, atol=0.03, rtol=0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batch(kind):
    layer = make(kind, bidirectional=True)
    x = torch.randn(4, 0, I, **F64, requires_grad=True)
    for lengths in (None, []):
        out, h_n = layer(x, lengths=lengths)
        assert out.shape == (4, 0, 2 * H) and h_n.shape == (2, 0, H)
        out.sum().backward()
        assert layer.weight_ih_l0.grad is not None and (layer.weight_ih_l0.grad == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_layer_modes_agree_on_gradients(kind):
    grads = []
    x0 = torch.randn(40, B, I, **F64)
    for mode in ("parallel", "sequential"):
        layer = make(kind, mode=mode, num_layers=2, bidirectional=True)
        x = x0.clone().requires_grad_()
        h0 = torch.randn(4, B, H, **F64, generator=torch.Generator().manual_seed(2))
        h0.requires_grad_()
        out, h_n = layer(x, h0)
        (out.sin().sum() + h_n.cos().sum()).backward()
        grads.append([x.grad, h0.grad] + [p.grad for p in layer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_layer_gradcheck(kind):
    layer = make(kind, num_layers=2)
    x = torch.randn(5, 1, I, **F64, requires_grad=True)
    h0 = torch.randn(2, 1, H, **F64, requires_grad=True)
    params = tuple(layer.parameters())

    def run(x, h0, *ps):
        out, h_n = torch.func.functional_call(layer, dict(zip(dict(layer.named_parameters()),
                                                              ps)), (x, h0))
        return out, h_n
    assert torch.autograd.gradcheck(run, (x, h0, *params), fast_mode=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", [1, 5, 17])
def test_state_carries_across_split_calls(kind, split):
    layer = make(kind, num_layers=2)
    x = torch.randn(30, B, I, **F64)
    h0 = torch.randn(2, B, H, **F64)
    out, h_n = layer(x, h0)
    out1, h1 = layer(x[:split], h0)
    out2, h2 = layer(x[split:], h1)
    torch.testing.assert_close(torch.cat([out1, out2]), out, atol=1e-10, rtol=0)
    torch.testing.assert_close(h2, h_n, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_step_streams_the_forward(kind, batch_first):
    layer = make(kind, num_layers=2, batch_first=batch_first)
    x = torch.randn(B, 12, I, **F64) if batch_first else torch.randn(12, B, I, **F64)
    out, h_n = layer(x)
    h, outs = None, []
    for t in range(12):
        y, h = layer.step(x[:, t] if batch_first else x[t], h)
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs, 1 if batch_first else 0), out, atol=1e-10,
                               rtol=0)
    torch.testing.assert_close(h, h_n, atol=1e-10, rtol=0)
    y, h = layer.step(x[0, 0], None)                             # unbatched (H_in,)
    assert y.shape == (H,) and h.shape == (2, H)


@pytest.mark.parametrize("kind", KINDS)
def test_default_initial_state_is_zeros_and_the_papers_start_works(kind):
    layer = make(kind)
    x = torch.randn(6, B, I, **F64)
    out, h_n = layer(x)
    out0, h0_n = layer(x, torch.zeros(1, B, H, **F64))
    torch.testing.assert_close(out, out0, atol=0, rtol=0)
    torch.testing.assert_close(h_n, h0_n, atol=0, rtol=0)
    half = torch.full((1, B, H), 0.5, **F64)                     # h_0 = g(0), the paper's code
    torch.testing.assert_close(layer(x, half)[0], paper_loop(layer, x, half)[0], atol=1e-10,
                               rtol=0)
    assert not torch.allclose(layer(x, half)[0], out)
    # h_1 from zeros is b_1: the first output is the candidate through the input gate
    a, b = minrnn.coefficients(kind, F.linear(x[0], layer.weight_ih_l0, layer.bias_ih_l0))
    torch.testing.assert_close(out[0], b)


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_names_shapes_and_layouts(kind):
    G = minrnn.num_gates(kind)
    layer = LAYERS[kind](I, H, num_layers=2, bidirectional=True)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {
        "weight_ih_l0": (G * H, I), "bias_ih_l0": (G * H,),
        "weight_ih_l0_reverse": (G * H, I), "bias_ih_l0_reverse": (G * H,),
        "weight_ih_l1": (G * H, 2 * H), "bias_ih_l1": (G * H,),
        "weight_ih_l1_reverse": (G * H, 2 * H), "bias_ih_l1_reverse": (G * H,)}
    assert set(dict(LAYERS[kind](I, H, bias=False).named_parameters())) == {"weight_ih_l0"}
    bound = 1 / H ** 0.5
    assert all(p.abs().max() <= bound for p in layer.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_batch_first_and_unbatched(kind):
    layer = make(kind, num_layers=2, bidirectional=True)
    x = torch.randn(7, B, I, **F64)
    out, h_n = layer(x)
    assert out.shape == (7, B, 2 * H) and h_n.shape == (4, B, H)
    bf = make(kind, num_layers=2, bidirectional=True, batch_first=True)
    out_bf, h_bf = bf(x.transpose(0, 1).contiguous())
    torch.testing.assert_close(out_bf.transpose(0, 1), out, atol=1e-12, rtol=0)
    torch.testing.assert_close(h_bf, h_n, atol=1e-12, rtol=0)
    h0 = torch.randn(4, H, **F64)
    out_u, h_u = layer(x[:, 0], h0)
    assert out_u.shape == (7, 2 * H) and h_u.shape == (4, H)
    out_b, h_b = layer(x[:, :1], h0[:, None])
    torch.testing.assert_close(out_u, out_b[:, 0], atol=1e-12, rtol=0)
    torch.testing.assert_close(h_u, h_b[:, 0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["parallel", "sequential"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_variable_lengths_run_each_sequence_as_if_alone(kind, mode, batch_first):
    layer = make(kind, mode=mode, num_layers=2, bidirectional=True, batch_first=batch_first)
    lengths = [4, 9, 1, 6]                                       # unsorted on purpose
    x = torch.randn(9, len(lengths), I, **F64)
    h0 = torch.randn(4, len(lengths), H, **F64)
    out, h_n = layer(x.transpose(0, 1) if batch_first else x, h0, lengths=lengths)
    out = out.transpose(0, 1) if batch_first else out
    for k, n in enumerate(lengths):
        if batch_first:                                          # a batch of one
            alone, h_alone = layer(x[:n, k][None], h0[:, k:k + 1])
            alone, h_alone = alone[0], h_alone[:, 0]
        else:                                                    # unbatched
            alone, h_alone = layer(x[:n, k], h0[:, k])
        torch.testing.assert_close(out[:n, k], alone, atol=1e-10, rtol=0)
        assert (out[n:, k] == 0).all()
        torch.testing.assert_close(h_n[:, k], h_alone, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_packed_sequence_equals_lengths(kind):
    layer = make(kind, num_layers=2, bidirectional=True)
    lengths = torch.tensor([3, 7, 5])
    x = torch.randn(7, 3, I, **F64, requires_grad=True)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_p, h_p = layer(packed)
    out_l, h_l = layer(x, lengths=lengths)
    padded, got_lengths = pad_packed_sequence(out_p)
    assert torch.equal(got_lengths, lengths)
    torch.testing.assert_close(padded, out_l, atol=1e-12, rtol=0)
    torch.testing.assert_close(h_p, h_l, atol=1e-12, rtol=0)
    (grad,) = torch.autograd.grad(out_p.data.sum() + h_p.sum(), x)
    assert (grad[5:, 2] == 0).all() and (grad[:5, 2] != 0).all()   # nothing flows from padding


def test_dropout_between_layers_only_in_training():
    layer = make("mingru", num_layers=2, dropout=0.5)
    x = torch.randn(6, B, I, **F64)
    layer.eval()
    torch.testing.assert_close(layer(x)[0], paper_loop(layer, x)[0], atol=1e-10, rtol=0)
    layer.train()
    assert not torch.allclose(layer(x)[0], paper_loop(layer, x)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_raises_clear_errors(kind):
    cls = LAYERS[kind]
    name = cls.__name__
    with pytest.raises(ValueError, match=rf"{name}: mode must be one of .*got 'fast'"):
        cls(I, H, mode="fast")
    with pytest.raises(ValueError, match="hidden_size must be greater than zero"):
        cls(I, 0)
    with pytest.raises(TypeError, match="bidirectional should be of type bool"):
        cls(I, H, bidirectional="yes")
    layer = cls(I, H, num_layers=2)
    x = torch.randn(5, B, I)
    with pytest.raises(RuntimeError, match=r"expected h_0 of shape \(2, 2, 4\).*got \(1, 2, 4\)"):
        layer(x, torch.zeros(1, B, H))
    with pytest.raises(RuntimeError, match=r"expected 3 input features .*got 5"):
        layer(torch.randn(5, B, 5))
    with pytest.raises(ValueError, match="expected input of shape"):
        layer(torch.randn(5))
    with pytest.raises(ValueError, match="dtype"):
        layer(x.double())
    with pytest.raises(ValueError, match="lengths is for a padded batch"):
        layer(pack_padded_sequence(x, [5, 3]), lengths=[5, 3])
    with pytest.raises(ValueError, match=r"expected lengths as 2 integers .*got shape \(3,\)"):
        layer(x, lengths=[5, 3, 1])
    with pytest.raises(ValueError, match=r"between 1 and the sequence length L=5, got \[6, 3\]"):
        layer(x, lengths=[6, 3])
    with pytest.raises(TypeError, match="expected integer lengths, got torch.float32"):
        layer(x, lengths=torch.tensor([5.0, 3.0]))
    with pytest.raises(ValueError, match="lengths needs a batched 3-D input"):
        layer(x[:, 0], lengths=[5])
    with pytest.raises(ValueError, match="expected kind 'mingru' or 'minlstm', got 'gru'"):
        minrnn.recurrence("gru", torch.zeros(2, 1, 8))
    with pytest.raises(ValueError, match="step runs one direction"):
        cls(I, H, bidirectional=True).step(x[0])
    with pytest.raises(ValueError, match=r"step expects one time step .*got shape \(5, 2, 3\)"):
        layer.step(x)


def test_auto_mode_runs_the_step_loop_on_cpu(monkeypatch):
    """"auto" on CPU: the step loop, measured faster there (benchmarks/bench_minrnn.py)."""
    calls = []
    real = minrnn.recurrence
    monkeypatch.setattr(minrnn, "recurrence",
                        lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    x = torch.randn(20, B, I, **F64)
    for mode in ("auto", "sequential", "parallel"):
        make("mingru", mode=mode)(x)
        make("mingru", mode=mode)(x[:1])
    assert calls == [False, False, False, False, True, True]


def test_exports_and_repr():
    assert lstmkit.minGRU is lstmkit.layers.minGRU and "minLSTM" in lstmkit.__all__
    assert repr(lstmkit.minLSTM(3, 4, num_layers=2, mode="parallel")) == \
        "minLSTM(3, 4, num_layers=2, mode='parallel')"


# ---------------------------------------------------------------- the step loop in C++
def _compiled_available():
    return minrnn._extension() is not None


needs_compiled = pytest.mark.skipif(not _compiled_available(),
                                    reason="lstmkit's compiled extension is not built")


def run_both(kind, pre, h0, grad_out):
    """(h, dpre, dh0) from the C++ op and from the python step loop (the reference)."""
    results = []
    for compiled in (True, False):
        p = pre.detach().clone().requires_grad_()
        h_init = None if h0 is None else h0.detach().clone().requires_grad_()
        h = minrnn.recurrence(kind, p, h_init, compiled=compiled)
        h.backward(grad_out)
        results.append((h.detach(), p.grad, None if h_init is None else h_init.grad))
    return results


@needs_compiled
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T, batch, hidden", [(1, 2, 4), (37, 3, 21), (130, 2, 300)])
@pytest.mark.parametrize("h0", [None, "zero", "signed"])
def test_compiled_equals_the_python_loop_float64(kind, T, batch, hidden, h0):
    """Vector tails (21 units), more than one block of units (300 > 256), one step; outputs,
    dL/dpre and dL/dh_0 to 1e-12."""
    gen = torch.Generator().manual_seed(T + hidden)
    G = minrnn.num_gates(kind)
    pre = torch.randn(T, batch, G * hidden, generator=gen, **F64) * 4
    pre[T // 2, :, :hidden], pre[T // 2, :, hidden:2 * hidden] = 800.0, -800.0   # saturated
    h_init = None if h0 is None else torch.randn(batch, hidden, generator=gen, **F64)
    h_init = h_init * 0 if h0 == "zero" else h_init
    grad_out = torch.randn(T, batch, hidden, generator=gen, **F64)
    got, want = run_both(kind, pre, h_init, grad_out)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-12)


@needs_compiled
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_float32_within_rounding_and_saturated_gates_finite(kind):
    """float32: the C++ op and the python loop are each within float32 rounding of the float64
    result, and agree with each other to it; pre-activations at +-150 (f and i round to 0)
    stay finite."""
    T, hidden = 200, 40
    gen = torch.Generator().manual_seed(3)
    pre = torch.randn(T, B, minrnn.num_gates(kind) * hidden, generator=gen, **F64) * 4
    pre[5:9] = 150.0
    pre[20:24] = -150.0
    pre[30:33, :, :hidden], pre[30:33, :, hidden:2 * hidden] = 150.0, -150.0   # one gate each
    pre[40:43, :, :hidden], pre[40:43, :, hidden:2 * hidden] = -150.0, 150.0
    h0 = torch.randn(B, hidden, generator=gen, **F64)
    grad_out = torch.randn(T, B, hidden, generator=gen, **F64)
    exact = run_both(kind, pre, h0, grad_out)[1]
    got, want = run_both(kind, pre.float(), h0.float(), grad_out.float())
    for g, w, e in zip(got, want, exact):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(g.double(), e, atol=2e-5, rtol=2e-5)


@needs_compiled
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_h0", [False, True])
def test_gradcheck_compiled(kind, with_h0):
    pre = pre_activations(kind, 6).requires_grad_()
    inputs = (pre,) + ((initial("signed").requires_grad_(),) if with_h0 else ())
    assert torch.autograd.gradcheck(
        lambda p, *h0: minrnn.recurrence(kind, p, *h0, compiled=True), inputs)


@needs_compiled
def test_compiled_splits_over_threads_with_the_same_result():
    """B x H >= 1024 on 2 threads runs the (row, block) pairs on both; element-wise, so the
    result is the one thread's exactly."""
    gen = torch.Generator().manual_seed(4)
    pre = torch.randn(20, 8, 3 * 300, generator=gen, **F64).requires_grad_()
    h0 = torch.randn(8, 300, generator=gen, **F64).requires_grad_()
    grad_out = torch.randn(20, 8, 300, generator=gen, **F64)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            h = minrnn.recurrence("minlstm", pre, h0, compiled=True)
            results.append((h, *torch.autograd.grad(h, (pre, h0), grad_out)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@needs_compiled
def test_compiled_restores_the_denormal_mode():
    """The op flushes denormals inside its loops only; torch's ops after it still keep them."""
    minrnn.recurrence("mingru", torch.randn(4, B, 2 * H), compiled=True)
    tiny = torch.tensor([1e-40])                       # a float32 denormal
    assert (tiny * 1.0).item() != 0.0


class _CountingExtension:
    """The extension with its minrnn ops counted."""

    def __init__(self, ext):
        self.ext, self.calls = ext, []

    def __getattr__(self, name):
        fn = getattr(self.ext, name)
        return lambda *a: self.calls.append(name) or fn(*a)


@needs_compiled
@pytest.mark.parametrize("kind", KINDS)
def test_layer_runs_the_compiled_op_and_equals_the_python_loop(kind, monkeypatch):
    """Sequential and auto on the CPU: one C++ forward and one backward per layer direction
    (2 layers x 2 directions), with variable lengths; equal to the python loop (the extension
    hidden) in outputs, h_n and every gradient. The parallel form does not call it."""
    counting = _CountingExtension(minrnn._extension())
    lengths = [4, 9, 1, 6]
    x0 = torch.randn(9, len(lengths), I, **F64)
    h00 = torch.randn(4, len(lengths), H, **F64)
    results = {}
    for which in ("compiled", "python"):
        monkeypatch.setattr(minrnn, "_extension",
                            (lambda: counting) if which == "compiled" else (lambda: None))
        layer = make(kind, mode="auto", num_layers=2, bidirectional=True)
        x, h0 = x0.clone().requires_grad_(), h00.clone().requires_grad_()
        out, h_n = layer(x, h0, lengths=lengths)
        (out.sin().sum() + h_n.cos().sum()).backward()
        results[which] = [out, h_n, x.grad, h0.grad] + [p.grad for p in layer.parameters()]
    assert counting.calls == ["minrnn_forward"] * 4 + ["minrnn_backward"] * 4
    for got, want in zip(results["compiled"], results["python"]):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    counting.calls.clear()
    monkeypatch.setattr(minrnn, "_extension", lambda: counting)
    make(kind, mode="sequential")(x0)                   # inference: the forward op alone
    make(kind, mode="parallel")(x0)
    assert counting.calls == ["minrnn_forward"]


def test_compiled_bad_arguments_raise_clear_errors(monkeypatch):
    pre = torch.randn(3, B, 2 * H)
    with pytest.raises(TypeError, match="compiled must be None, True or False, got 'yes'"):
        minrnn.recurrence("mingru", pre, compiled="yes")
    with pytest.raises(ValueError, match="compiled=True runs the step loop; parallel=True"):
        minrnn.recurrence("mingru", pre, parallel=True, compiled=True)
    if _compiled_available():
        with pytest.raises(ValueError, match=r"needs h0 of pre's dtype .*got torch.float64"):
            minrnn.recurrence("mingru", pre, torch.zeros(B, H, **F64), compiled=True)
    monkeypatch.setattr(minrnn, "_extension", lambda: None)
    with pytest.raises(ValueError, match="compiled extension is unavailable"):
        minrnn.recurrence("mingru", pre, compiled=True)
    # compiled=None without the extension: the python loop, the same result
    torch.testing.assert_close(minrnn.recurrence("mingru", pre),
                               minrnn.recurrence("mingru", pre, compiled=False))


@needs_compiled
@pytest.mark.parametrize("kind", KINDS)
def test_layer_engines(kind, monkeypatch):
    """engine="compiled" runs the C++ loop, "python" never calls it, both give the same numbers;
    "compiled" where it cannot run (parallel mode, no extension) is refused by name."""
    counting = _CountingExtension(minrnn._extension())
    monkeypatch.setattr(minrnn, "_extension", lambda: counting)
    x = torch.randn(6, B, I, **F64)
    out = {}
    for engine in ("compiled", "python"):
        layer = make(kind, engine=engine, bidirectional=True)
        counting.calls.clear()
        y, h_n = layer(x)
        out[engine] = (y, h_n)
        assert counting.calls == (["minrnn_forward"] * 2 if engine == "compiled" else [])
    for a, b in zip(out["compiled"], out["python"]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert "engine='python'" in repr(make(kind, engine="python"))
    with pytest.raises(ValueError, match="engine should be one of"):
        make(kind, engine="torch")
    with pytest.raises(ValueError, match="engine='compiled' runs the step loop; mode='parallel'"):
        make(kind, engine="compiled", mode="parallel")(x)
    monkeypatch.setattr(minrnn, "_extension", lambda: None)
    with pytest.raises(RuntimeError, match="engine='compiled', but .*extension is unavailable"):
        make(kind, engine="compiled")(x)


@pytest.mark.parametrize("kind", KINDS)
def test_traced_layer_follows_the_python_loop(kind, monkeypatch):
    """torch.jit.trace records the python loop's torch ops (the C++ op is opaque to it): the
    trace runs and equals the eager layer, which ran the C++ op."""
    counting = _CountingExtension(minrnn._extension()) if _compiled_available() else None
    monkeypatch.setattr(minrnn, "_extension", lambda: counting)
    layer = make(kind, mode="sequential", bidirectional=True)
    x = torch.randn(6, B, I, **F64)
    want, _ = layer(x)
    with pytest.warns():                            # torch.jit.trace is deprecated
        traced = torch.jit.trace(layer, (x,), check_trace=False)
    torch.testing.assert_close(traced(x)[0], want, atol=1e-12, rtol=0)
    torch.testing.assert_close(traced(x * 2)[0], layer(x * 2)[0], atol=1e-12, rtol=0)
    if counting is not None:                        # only the eager calls ran it
        assert counting.calls == ["minrnn_forward"] * 4      # want, layer(x * 2): 2 each


# ---------------------------------------------------------------- trace

@pytest.mark.parametrize("kind", KINDS)
def test_trace_follows_the_equations_and_bptt_through_h(kind):
    """Every kept gate and state is the paper's, and dL/dh_t is what BPTT carries through
    h_t = a_t h_{t-1} + b_t: dL/dh_t = w_t + a_{t+1} dL/dh_{t+1} for L = sum(w * output)."""
    layer = make(kind)
    x = torch.randn(7, B, I, **F64)
    h0 = torch.randn(1, B, H, **F64)
    out, h_n = layer(x, h0)
    trace = layer.trace(x, h0)
    torch.testing.assert_close(trace.output, out, atol=1e-12, rtol=0)
    torch.testing.assert_close(trace.h_n, h_n, atol=1e-12, rtol=0)
    w = torch.randn_like(out)
    (trace.output * w).sum().backward()
    st = trace.steps[0][0]
    pre = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0).detach()
    G = minrnn.num_gates(kind)
    g = minrnn.g(pre.chunk(G, -1)[-1])
    if kind == "mingru":
        z = torch.sigmoid(pre[..., :H])
        torch.testing.assert_close(st.gates["z"], z)
        a, b = 1 - z, z * g
    else:
        f, i = torch.sigmoid(pre[..., :H]), torch.sigmoid(pre[..., H:2 * H])
        torch.testing.assert_close(st.gates["f"], f / (f + i))
        torch.testing.assert_close(st.gates["i"], i / (f + i))
        a, b = f / (f + i), i / (f + i) * g
    torch.testing.assert_close(st.gates["g"], g)
    prev = torch.cat([h0, st.h[:-1]])
    torch.testing.assert_close(st.h, a * prev + b)
    dh = st.grad_h
    torch.testing.assert_close(dh[-1], w[-1])
    torch.testing.assert_close(dh[:-1], w[:-1] + a[1:] * dh[1:])


@pytest.mark.parametrize("kind", KINDS)
def test_trace_with_lengths_keeps_each_sequence_as_if_alone(kind):
    layer = make(kind, num_layers=2, bidirectional=True, batch_first=True)
    lengths = [4, 9, 1]
    x = torch.randn(len(lengths), 9, I, **F64)
    trace = layer.trace(x, lengths=lengths)
    out, h_n = layer(x, lengths=lengths)
    torch.testing.assert_close(trace.output, out, atol=1e-12, rtol=0)
    torch.testing.assert_close(trace.h_n, h_n, atol=1e-12, rtol=0)
    trace.output.pow(2).sum().backward()
    for k, n in enumerate(lengths):
        alone = layer.trace(x[k:k + 1, :n])
        alone.output.pow(2).sum().backward()
        for row, row_alone in zip(trace.steps, alone.steps):
            for st, sa in zip(row, row_alone):
                for key in ("z", "g") if kind == "mingru" else ("f", "i", "g"):
                    torch.testing.assert_close(st.gates[key][:n, k], sa.gates[key][:, 0])
                    assert (st.gates[key][n:, k] == 0).all()
                torch.testing.assert_close(st.h[:n, k], sa.h[:, 0])
                torch.testing.assert_close(st.grad_h[:n, k], sa.grad_h[:, 0])
                assert (st.h[n:, k] == 0).all() and (st.grad_h[n:, k] == 0).all()


def test_trace_bad_input_is_named():
    layer = make("mingru")
    with pytest.raises(ValueError, match="trace takes a batched 3-D input"):
        layer.trace(torch.randn(4, I, **F64))
    with pytest.raises(ValueError, match="every length between 1 and the sequence length"):
        layer.trace(torch.randn(4, B, I, **F64), lengths=[5, 1])   # longer than L = 4
    assert layer.trace(torch.randn(4, B, I, **F64)).steps[0][0].grad_h is None
