"""lstmkit.LSTMCell / GRUCell / RNNCell against torch.nn.*Cell and against one layer step."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import lstmkit

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
ENGINES = ("python", "torch")
ATOL = {torch.float32: 1e-5, torch.float64: 1e-10}
I, H, B = 3, 5, 4


def build_cells(kind, dtype, engine, bias=True, seed=0):
    torch.manual_seed(seed)
    kw = {"bias": bias, "dtype": dtype}
    if kind == "lstm":
        return nn.LSTMCell(I, H, **kw), lstmkit.LSTMCell(I, H, engine=engine, **kw)
    if kind == "gru":
        return nn.GRUCell(I, H, **kw), lstmkit.GRUCell(I, H, engine=engine, **kw)
    nl = kind[4:]
    return (nn.RNNCell(I, H, nonlinearity=nl, **kw),
            lstmkit.RNNCell(I, H, nonlinearity=nl, engine=engine, **kw))


def step_and_grads(cell, kind, x, hx, upstream):
    out = cell(x, hx)
    outs = list(out) if kind == "lstm" else [out]
    loss = sum((o.sin() * g).sum() for o, g in zip(outs, upstream))
    leaves = [x]
    if hx is not None:
        leaves += list(hx) if kind == "lstm" else [hx]
    params = dict(cell.named_parameters())
    grads = torch.autograd.grad(loss, leaves + list(params.values()))
    return outs, grads[: len(leaves)], dict(zip(params, grads[len(leaves):]))


CASES = list(itertools.product(KINDS, ENGINES, (True, False), (True, False),
                               (torch.float32, torch.float64)))


@pytest.mark.parametrize("kind,engine,batched,with_hx,dtype", CASES)
def test_cell_matches_torch(kind, engine, batched, with_hx, dtype):
    ref, ours = build_cells(kind, dtype, engine)
    ours.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    lead = (B,) if batched else ()
    rand = lambda *s: torch.randn(*lead, *s, generator=gen, dtype=dtype)  # noqa: E731
    x = rand(I)
    n_states = 2 if kind == "lstm" else 1
    hx = [rand(H) for _ in range(n_states)] if with_hx else None
    upstream = [rand(H) for _ in range(n_states)]

    results = []
    for cell in (ref, ours):
        xl = x.clone().requires_grad_()
        hl = None
        if hx is not None:
            hl = [h.clone().requires_grad_() for h in hx]
            hl = tuple(hl) if kind == "lstm" else hl[0]
        results.append(step_and_grads(cell, kind, xl, hl, upstream))
    (o1, g1, p1), (o2, g2, p2) = results
    atol = ATOL[dtype]
    for a, b in zip(o1, o2):
        assert b.shape == a.shape == (*lead, H) and b.dtype == dtype
        torch.testing.assert_close(b, a, atol=atol, rtol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, atol=atol, rtol=0)
    assert p1.keys() == p2.keys()
    for name in p1:
        torch.testing.assert_close(p2[name], p1[name], atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_cell_without_bias_matches_torch(kind, engine):
    ref, ours = build_cells(kind, torch.float64, engine, bias=False)
    assert ours.bias_ih is None and ours.bias_hh is None
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, I, dtype=torch.float64)
    a, b = ref(x), ours(x)
    for u, v in zip(a if kind == "lstm" else [a], b if kind == "lstm" else [b]):
        torch.testing.assert_close(v, u, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_engines_agree(kind):
    _, python = build_cells(kind, torch.float64, "python")
    _, fused = build_cells(kind, torch.float64, "torch")
    fused.load_state_dict(python.state_dict())
    x = torch.randn(B, I, dtype=torch.float64)
    a, b = python(x), fused(x)
    for u, v in zip(a if kind == "lstm" else [a], b if kind == "lstm" else [b]):
        torch.testing.assert_close(v, u, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ cell == one layer step
CELL_VS_LAYER = [
    ("lstm", {}), ("lstm", {"peephole": True}), ("lstm", {"coupled": True}),
    ("lstm", {"peephole": True, "coupled": True}),
    ("gru", {}), ("gru", {"reset_after": False}),
    ("rnn_tanh", {}), ("rnn_relu", {}),
]


def _pair(kind, kw, engine, bias=True):
    torch.manual_seed(0)
    f = {"dtype": torch.float64, "engine": engine, "bias": bias}
    if kind == "lstm":
        return lstmkit.LSTMCell(I, H, **f, **kw), lstmkit.LSTM(I, H, **f, **kw)
    if kind == "gru":
        return lstmkit.GRUCell(I, H, **f, **kw), lstmkit.GRU(I, H, **f, **kw)
    nl = kind[4:]
    return (lstmkit.RNNCell(I, H, nonlinearity=nl, **f),
            lstmkit.RNN(I, H, nonlinearity=nl, **f))


@pytest.mark.parametrize("kind,kw", CELL_VS_LAYER,
                         ids=[k + "".join(f"-{n}" for n in kw) for k, kw in CELL_VS_LAYER])
@pytest.mark.parametrize("engine", ["python", "auto"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_equals_one_layer_step(kind, kw, engine, batched, bias):
    cell, layer = _pair(kind, kw, engine, bias)
    layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    n_states = 2 if kind == "lstm" else 1
    lead = (B,) if batched else ()
    x = torch.randn(*lead, I, dtype=torch.float64, requires_grad=True)
    hx = [torch.randn(*lead, H, dtype=torch.float64, requires_grad=True)
          for _ in range(n_states)]

    c_out = cell(x, tuple(hx) if kind == "lstm" else hx[0])
    c_out = list(c_out) if kind == "lstm" else [c_out]
    l_hx = [h.unsqueeze(0) for h in hx]
    out, hid = layer(x.unsqueeze(0), tuple(l_hx) if kind == "lstm" else l_hx[0])
    hid = list(hid) if kind == "lstm" else [hid]
    torch.testing.assert_close(out[0], c_out[0], atol=1e-12, rtol=0)
    for a, b in zip(c_out, hid):
        torch.testing.assert_close(b[0], a, atol=1e-12, rtol=0)

    leaves = [x, *hx, *cell.parameters()]
    g_cell = torch.autograd.grad(sum(o.sin().sum() for o in c_out), leaves)
    g_layer = torch.autograd.grad(sum(h[0].sin().sum() for h in hid),
                                  [x, *hx, *layer.parameters()])
    for a, b in zip(g_cell, g_layer):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind,kw", CELL_VS_LAYER,
                         ids=[k + "".join(f"-{n}" for n in kw) for k, kw in CELL_VS_LAYER])
def test_cell_unrolled_equals_layer(kind, kw):
    """Feeding a cell T steps reproduces the layer's output sequence."""
    cell, layer = _pair(kind, kw, "python")
    layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    x = torch.randn(4, B, I, dtype=torch.float64)
    out, _ = layer(x)
    state = None
    for t in range(x.shape[0]):
        state = cell(x[t], state)
        h = state[0] if kind == "lstm" else state
        torch.testing.assert_close(out[t], h, atol=1e-12, rtol=0)
