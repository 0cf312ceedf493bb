"""Under torch.autocast("cpu", bfloat16): the hand-written engines run in float32 (exactly as
without autocast); the torch engine runs torch's bfloat16 kernels (close, not equal)."""

import pytest
import torch

import lstmkit
from lstmkit.engine.compiled import available as compiled_available
from lstmkit.losses import linear_cross_entropy

ENGINES = ["python", "torch"] + (["compiled"] if compiled_available() else [])
LAYERS = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU, "rnn": lstmkit.RNN}


def run(model, x, autocast):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, _ = model(x)
    out.float().pow(2).sum().backward()
    return out, {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", LAYERS)
def test_engines_under_autocast(engine, kind):
    torch.manual_seed(0)
    model = LAYERS[kind](8, 16, num_layers=2, engine=engine)
    x = torch.randn(6, 3, 8)
    ref, ref_grads = run(model, x, False)
    out, grads = run(model, x, True)
    if engine == "torch":          # torch's own kernels under autocast, exactly as torch.nn's
        want, want_grads = run(model.to_torch(), x, True)
        assert out.dtype == want.dtype
        torch.testing.assert_close(out, want, rtol=0, atol=0)
        for k in want_grads:
            torch.testing.assert_close(grads[k], want_grads[k], rtol=0, atol=0)
        torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
        return
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for k in ref_grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=0, atol=0)


def test_fused_loss_under_autocast_is_float32():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(12, 8, generator=g, requires_grad=True)
    w = torch.randn(30, 8, generator=g, requires_grad=True)
    b = torch.randn(30, generator=g, requires_grad=True)
    y = torch.randint(30, (12,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, b, y)
    loss.backward()
    grads = [t.grad.clone() for t in (h, w, b)]
    for t in (h, w, b):
        t.grad = None
    ref = linear_cross_entropy(h, w, b, y)
    ref.backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    for got, t in zip(grads, (h, w, b)):
        torch.testing.assert_close(got, t.grad, rtol=0, atol=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bfloat16_state_is_taken_under_autocast(engine):
    """Truncated BPTT under autocast carries the state the previous segment returned: a
    bfloat16 state is taken as the same values in float32 (exactly the result of passing them
    so), and the hand-written engines keep computing in float32."""
    torch.manual_seed(0)
    model = lstmkit.LSTM(8, 16, num_layers=2, engine=engine)
    x = torch.randn(6, 3, 8)
    state = tuple(torch.randn(2, 3, 16).bfloat16() for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = model(x, state)
        want, (want_h, want_c) = model(x, tuple(s.float() for s in state))
    for got, ref in ((out, want), (h, want_h), (c, want_c)):
        assert got.dtype == ref.dtype and torch.equal(got, ref)
    if engine != "torch":
        assert out.dtype == torch.float32
        assert torch.equal(out, model(x, tuple(s.float() for s in state))[0])
    with pytest.raises(RuntimeError, match="dtype"):
        model(x, state)                                   # outside autocast: a clear error


REGULARISED = {"lstm": {"zoneout": (0.2, 0.1), "recurrent_dropout": 0.2, "weight_drop": 0.3,
                        "input_dropout": 0.1},
               "lstm-ln": {"zoneout": 0.1, "recurrent_dropout": 0.2},
               "gru": {"zoneout": 0.1, "recurrent_dropout": 0.2, "weight_drop": 0.3},
               "gru-ln": {"zoneout": 0.1, "input_dropout": 0.1},
               "slstm": {"num_heads": 4, "zoneout": 0.1, "weight_drop": 0.2}}


@pytest.mark.skipif(not compiled_available(), reason="the compiled engine is not built")
@pytest.mark.parametrize("cell", REGULARISED)
def test_masks_and_layernorm_under_bfloat16_products(cell):
    """A call large enough for the compiled engine's bfloat16 products (one step's recurrent
    product >= BF16_MIN_STEP_MACS), with every mask drawn the same (a seed): outputs and
    gradients within bfloat16 rounding of the float32 call on the same masks. The LayerNorm
    cells normalise the products themselves (O(1) values with bfloat16's relative error) and
    differ by ~2e-3 on average, the others by ~3e-5; all masks off differs by 6e-3 to 0.3."""
    from lstmkit.engine.compiled import bf16_products
    from lstmkit.layers import make_layer

    torch.manual_seed(0)
    model = make_layer(cell, 32, 256, num_layers=2, engine="compiled", **REGULARISED[cell])
    x = torch.randn(5, 16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bf16_products(model.cell, x)
    torch.manual_seed(1)
    ref, ref_grads = run(model, x, False)
    torch.manual_seed(1)
    out, grads = run(model, x, True)
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref)                    # the products did run in bfloat16
    mean = 5e-3 if cell.endswith("-ln") else 2e-4
    assert (out - ref).abs().mean() < mean and (out - ref).abs().max() < 0.1
    for k in ref_grads:
        err = (grads[k] - ref_grads[k]).abs().mean() / ref_grads[k].abs().mean()
        assert err < (0.05 if cell.endswith("-ln") else 0.01), (k, err.item())
