"""LSTM variants (peephole, coupled, both, with projection) and both GRU forms against an
independent autograd reference (tests/reference_cells.py): outputs, final states and the
gradients of every parameter, the input and the initial state, in float64.

The reference itself is first checked against torch.nn in the standard configurations."""

import pathlib
import sys
import zlib

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from reference_cells import cell_forward, run_layer, weighted_loss  # noqa: E402

DT = torch.float64
T, B, I, H, P = 5, 3, 3, 4, 2
ATOL = 1e-10
SORTED_LENGTHS = (5, 3, 2)

LSTM_VARIANTS = [
    pytest.param(False, False, id="plain"),
    pytest.param(True, False, id="peephole"),
    pytest.param(False, True, id="coupled"),
    pytest.param(True, True, id="peephole+coupled"),
]
STACKS = [pytest.param(1, False, id="1layer"), pytest.param(2, True, id="2layer-bidir")]
LENGTHS = [pytest.param(None, id="full"), pytest.param(SORTED_LENGTHS, id="lengths"),
           pytest.param((4, 2, 1), id="lengths-below-T")]
H0 = [pytest.param(False, id="no-h0"), pytest.param(True, id="h0")]


def _seed(*parts) -> None:
    """A seed per test case that does not depend on PYTHONHASHSEED."""
    torch.manual_seed(zlib.crc32(repr(parts).encode()))


def _perturb_params(module, scale: float = 0.6) -> None:
    """Weights ~ U(-scale, scale): larger than the default init so every term matters."""
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-scale, scale)


def _initial(kind, layers, D, out_size, hidden, batch=B, requires_grad=True):
    h0 = torch.randn(layers * D, batch, out_size, dtype=DT, requires_grad=requires_grad)
    if kind != "lstm":
        return h0, [h0]
    c0 = torch.randn(layers * D, batch, hidden, dtype=DT, requires_grad=requires_grad)
    return (h0, c0), [h0, c0]


def _assert_close(got, want, what):
    assert got is not None and want is not None, what
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=lambda m: f"{what}: {m}")


def _compare_with_reference(module, x, hx, leaves, lengths=None):
    """module(x, hx, lengths) vs run_layer on the same parameters: values and all gradients."""
    params = list(module.named_parameters())
    inputs = [x, *leaves, *(p for _, p in params)]
    names = ["input", *(f"hx[{k}]" for k in range(len(leaves))), *(n for n, _ in params)]

    out, hidden = module(x, hx, lengths=lengths)
    h_n, c_n = hidden if isinstance(hidden, tuple) else (hidden, None)
    got_grads = torch.autograd.grad(weighted_loss(out, h_n, c_n), inputs, allow_unused=True)

    r_out, r_h, r_c, _ = run_layer(module, x, hx, lengths)
    want_grads = torch.autograd.grad(weighted_loss(r_out, r_h, r_c), inputs, allow_unused=True)

    _assert_close(out, r_out, "output")
    _assert_close(h_n, r_h, "h_n")
    if c_n is not None or r_c is not None:
        _assert_close(c_n, r_c, "c_n")
    for name, g, w in zip(names, got_grads, want_grads):
        _assert_close(g, w, f"grad of {name}")


# ------------------------------------------------------------ the reference vs torch.nn
@pytest.mark.parametrize("kind,kwargs", [
    ("lstm", {}), ("lstm", {"proj_size": P}), ("gru", {}),
    ("rnn", {"nonlinearity": "tanh"}), ("rnn", {"nonlinearity": "relu"}),
    ("lstm", {"bias": False}), ("gru", {"bias": False}),
])
@pytest.mark.parametrize("lengths", [None, (2, 5, 3), (2, 4, 3)],
                         ids=["full", "unsorted-lengths", "unsorted-lengths-below-T"])
def test_reference_matches_torch_nn(kind, kwargs, lengths):
    _seed("ref-torch", kind, str(kwargs), lengths)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
    mod = cls(I, H, num_layers=2, bidirectional=True, dtype=DT, **kwargs)
    _perturb_params(mod)
    out_size = kwargs.get("proj_size", 0) or H
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    hx, leaves = _initial(kind, 2, 2, out_size, H)
    inputs = [x, *leaves, *mod.parameters()]

    if lengths is None:
        out, hidden = mod(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        out, hidden = mod(packed, hx)
        out, _ = pad_packed_sequence(out, total_length=T)
    h_n, c_n = hidden if kind == "lstm" else (hidden, None)
    want = torch.autograd.grad(weighted_loss(out, h_n, c_n), inputs)

    r_out, r_h, r_c, _ = run_layer(mod, x, hx, lengths)
    got = torch.autograd.grad(weighted_loss(r_out, r_h, r_c), inputs)

    _assert_close(r_out, out, "output")
    _assert_close(r_h, h_n, "h_n")
    if kind == "lstm":
        _assert_close(r_c, c_n, "c_n")
    for k, (g, w) in enumerate(zip(got, want)):
        _assert_close(g, w, f"grad #{k}")


@pytest.mark.parametrize("cls,kwargs", [
    (nn.LSTMCell, {}), (nn.GRUCell, {}), (nn.RNNCell, {"nonlinearity": "tanh"}),
    (nn.RNNCell, {"nonlinearity": "relu"}),
])
def test_reference_cell_matches_torch_nn(cls, kwargs):
    _seed("ref-cell", cls.__name__, str(kwargs))
    cell = cls(I, H, dtype=DT, **kwargs)
    _perturb_params(cell)
    x = torch.randn(B, I, dtype=DT)
    hx = torch.randn(B, H, dtype=DT)
    if cls is nn.LSTMCell:
        hx = (hx, torch.randn(B, H, dtype=DT))
    want, got = cell(x, hx), cell_forward(cell, x, hx)
    for w, g in zip(want if isinstance(want, tuple) else (want,),
                    got if isinstance(got, tuple) else (got,)):
        _assert_close(g, w, "cell output")


# ------------------------------------------------------------ parameter layout of the variants
@pytest.mark.parametrize("peephole,coupled", [p.values for p in LSTM_VARIANTS])
@pytest.mark.parametrize("proj", [0, P])
def test_variant_parameter_shapes(peephole, coupled, proj):
    mod = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=proj,
                       peephole=peephole, coupled=coupled, dtype=DT)
    G = 3 if coupled else 4
    out = proj or H
    for layer in range(2):
        for sfx in ("", "_reverse"):
            s = f"_l{layer}{sfx}"
            layer_in = I if layer == 0 else 2 * out
            assert getattr(mod, "weight_ih" + s).shape == (G * H, layer_in)
            assert getattr(mod, "weight_hh" + s).shape == (G * H, out)
            assert getattr(mod, "bias_ih" + s).shape == (G * H,)
            assert getattr(mod, "bias_hh" + s).shape == (G * H,)
            if peephole:
                assert getattr(mod, "weight_ch" + s).shape == ((2 if coupled else 3) * H,)
            else:
                assert not hasattr(mod, "weight_ch" + s)
            if proj:
                assert getattr(mod, "weight_hr" + s).shape == (proj, H)


# ------------------------------------------------------------ LSTM variants vs the reference
@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS)
@pytest.mark.parametrize("proj", [0, P], ids=["noproj", "proj"])
@pytest.mark.parametrize("layers,bidir", STACKS)
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("with_h0", H0)
def test_lstm_variant_matches_reference(peephole, coupled, proj, layers, bidir, lengths, with_h0):
    _seed("lstm", peephole, coupled, proj, layers, bidir, lengths, with_h0)
    mod = lstmkit.LSTM(I, H, num_layers=layers, bidirectional=bidir, proj_size=proj,
                       peephole=peephole, coupled=coupled, engine="python", dtype=DT)
    _perturb_params(mod)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    hx, leaves = (None, [])
    if with_h0:
        hx, leaves = _initial("lstm", layers, 2 if bidir else 1, proj or H, H)
    _compare_with_reference(mod, x, hx, leaves, lengths)


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS[1:])
def test_lstm_variant_auto_engine_is_hand_written(peephole, coupled):
    """engine="auto" (the default) must run the variants' own equations too."""
    _seed("auto", peephole, coupled)
    mod = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, peephole=peephole,
                       coupled=coupled, dtype=DT)
    _perturb_params(mod)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    _compare_with_reference(mod, x, None, [], SORTED_LENGTHS)


def test_torch_engine_refuses_variants():
    with pytest.raises(ValueError):
        lstmkit.LSTM(I, H, peephole=True, engine="torch")
    with pytest.raises(ValueError):
        lstmkit.LSTM(I, H, coupled=True, engine="torch")
    with pytest.raises(ValueError):
        lstmkit.GRU(I, H, reset_after=False, engine="torch")


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS)
@pytest.mark.parametrize("proj", [0, P], ids=["noproj", "proj"])
def test_lstm_variant_packed_unsorted_matches_reference(peephole, coupled, proj):
    """A PackedSequence made with enforce_sorted=False, with an initial state."""
    _seed("packed", peephole, coupled, proj)
    mod = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=proj,
                       peephole=peephole, coupled=coupled, engine="python", dtype=DT)
    _perturb_params(mod)
    lengths = (2, 5, 3)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    hx, leaves = _initial("lstm", 2, 2, proj or H, H)
    params = list(mod.parameters())
    inputs = [x, *leaves, *params]

    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    out, (h_n, c_n) = mod(packed, hx)
    out, _ = pad_packed_sequence(out, total_length=T)
    got = torch.autograd.grad(weighted_loss(out, h_n, c_n), inputs)

    r_out, r_h, r_c, _ = run_layer(mod, x, hx, lengths)
    want = torch.autograd.grad(weighted_loss(r_out, r_h, r_c), inputs)
    _assert_close(out, r_out, "output")
    _assert_close(h_n, r_h, "h_n")
    _assert_close(c_n, r_c, "c_n")
    for k, (g, w) in enumerate(zip(got, want)):
        _assert_close(g, w, f"grad #{k}")


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS[1:])
def test_lstm_variant_batch_first_lengths(peephole, coupled):
    _seed("batch_first", peephole, coupled)
    mod = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, proj_size=P,
                       peephole=peephole, coupled=coupled, dtype=DT)
    _perturb_params(mod)
    x = torch.randn(B, T, I, dtype=DT, requires_grad=True)
    hx, leaves = _initial("lstm", 2, 2, P, H)
    params = list(mod.parameters())
    inputs = [x, *leaves, *params]
    out, (h_n, c_n) = mod(x, hx, lengths=SORTED_LENGTHS)
    got = torch.autograd.grad(weighted_loss(out, h_n, c_n), inputs)
    r_out, r_h, r_c, _ = run_layer(mod, x.transpose(0, 1), hx, SORTED_LENGTHS)
    r_out = r_out.transpose(0, 1)
    want = torch.autograd.grad(weighted_loss(r_out, r_h, r_c), inputs)
    _assert_close(out, r_out, "output")
    _assert_close(h_n, r_h, "h_n")
    _assert_close(c_n, r_c, "c_n")
    for k, (g, w) in enumerate(zip(got, want)):
        _assert_close(g, w, f"grad #{k}")


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS[1:])
def test_lstm_variant_unbatched(peephole, coupled):
    _seed("unbatched", peephole, coupled)
    mod = lstmkit.LSTM(I, H, bidirectional=True, peephole=peephole, coupled=coupled, dtype=DT)
    _perturb_params(mod)
    x = torch.randn(T, I, dtype=DT, requires_grad=True)
    h0 = torch.randn(2, H, dtype=DT, requires_grad=True)
    c0 = torch.randn(2, H, dtype=DT, requires_grad=True)
    inputs = [x, h0, c0, *mod.parameters()]
    out, (h_n, c_n) = mod(x, (h0, c0))
    got = torch.autograd.grad(weighted_loss(out, h_n, c_n), inputs)
    r_out, r_h, r_c, _ = run_layer(mod, x.unsqueeze(1), (h0.unsqueeze(1), c0.unsqueeze(1)))
    r_out, r_h, r_c = r_out.squeeze(1), r_h.squeeze(1), r_c.squeeze(1)
    want = torch.autograd.grad(weighted_loss(r_out, r_h, r_c), inputs)
    _assert_close(out, r_out, "output")
    _assert_close(h_n, r_h, "h_n")
    _assert_close(c_n, r_c, "c_n")
    for k, (g, w) in enumerate(zip(got, want)):
        _assert_close(g, w, f"grad #{k}")


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS[1:])
def test_lstm_variant_no_bias(peephole, coupled):
    _seed("nobias", peephole, coupled)
    mod = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, bias=False, proj_size=P,
                       peephole=peephole, coupled=coupled, dtype=DT)
    _perturb_params(mod)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    hx, leaves = _initial("lstm", 2, 2, P, H)
    _compare_with_reference(mod, x, hx, leaves, SORTED_LENGTHS)


# ------------------------------------------------------------ GRU (both forms) and RNN
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("layers,bidir", STACKS)
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("with_h0", H0)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gru_matches_reference(reset_after, layers, bidir, lengths, with_h0, bias):
    _seed("gru", reset_after, layers, bidir, lengths, with_h0, bias)
    mod = lstmkit.GRU(I, H, num_layers=layers, bidirectional=bidir, bias=bias,
                      reset_after=reset_after, engine="python", dtype=DT)
    _perturb_params(mod)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    hx, leaves = (None, [])
    if with_h0:
        hx, leaves = _initial("gru", layers, 2 if bidir else 1, H, H)
    _compare_with_reference(mod, x, hx, leaves, lengths)


def test_gru_reset_before_differs_from_reset_after():
    """The two forms are different functions of the same parameters (so the flag is used)."""
    torch.manual_seed(0)
    a = lstmkit.GRU(I, H, reset_after=True, dtype=DT)
    b = lstmkit.GRU(I, H, reset_after=False, dtype=DT)
    _perturb_params(a)
    b.load_state_dict(a.state_dict())
    x = torch.randn(T, B, I, dtype=DT)
    h0 = torch.randn(1, B, H, dtype=DT)
    assert not torch.allclose(a(x, h0)[0], b(x, h0)[0])


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("lengths", LENGTHS)
def test_rnn_matches_reference(nonlinearity, lengths):
    _seed("rnn", nonlinearity, lengths)
    mod = lstmkit.RNN(I, H, num_layers=2, nonlinearity=nonlinearity, bidirectional=True,
                      engine="python", dtype=DT)
    _perturb_params(mod)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    hx, leaves = _initial("rnn", 2, 2, H, H)
    _compare_with_reference(mod, x, hx, leaves, lengths)


# ------------------------------------------------------------ single-step cells
CELLS = [
    pytest.param(lstmkit.LSTMCell, {"peephole": True}, id="lstm-peephole"),
    pytest.param(lstmkit.LSTMCell, {"coupled": True}, id="lstm-coupled"),
    pytest.param(lstmkit.LSTMCell, {"peephole": True, "coupled": True}, id="lstm-both"),
    pytest.param(lstmkit.LSTMCell, {"engine": "python"}, id="lstm-plain-python"),
    pytest.param(lstmkit.GRUCell, {"reset_after": False}, id="gru-reset-before"),
    pytest.param(lstmkit.GRUCell, {"reset_after": True, "engine": "python"}, id="gru-python"),
    pytest.param(lstmkit.RNNCell, {"nonlinearity": "relu", "engine": "python"}, id="rnn-relu"),
    pytest.param(lstmkit.RNNCell, {"engine": "python"}, id="rnn-tanh"),
]


@pytest.mark.parametrize("cls,kwargs", CELLS)
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_matches_reference_step(cls, kwargs, with_hx, bias):
    _seed("cell", cls.__name__, str(kwargs), with_hx, bias)
    cell = cls(I, H, bias=bias, dtype=DT, **kwargs)
    _perturb_params(cell)
    x = torch.randn(B, I, dtype=DT, requires_grad=True)
    is_lstm = cls is lstmkit.LSTMCell
    leaves, hx = [], None
    if with_hx:
        leaves = [torch.randn(B, H, dtype=DT, requires_grad=True) for _ in range(1 + is_lstm)]
        hx = tuple(leaves) if is_lstm else leaves[0]
    inputs = [x, *leaves, *cell.parameters()]
    got = cell(x, hx)
    want = cell_forward(cell, x, hx)
    got, want = (got, want) if is_lstm else ((got,), (want,))
    g_got = torch.autograd.grad(weighted_loss(*got), inputs)
    g_want = torch.autograd.grad(weighted_loss(*want), inputs)
    for k, (g, w) in enumerate(zip(got, want)):
        _assert_close(g, w, f"state #{k}")
    for k, (g, w) in enumerate(zip(g_got, g_want)):
        _assert_close(g, w, f"grad #{k}")


@pytest.mark.parametrize("cls,kwargs", CELLS[:5])
def test_cell_unbatched(cls, kwargs):
    _seed("cell-unbatched", cls.__name__, str(kwargs))
    cell = cls(I, H, dtype=DT, **kwargs)
    _perturb_params(cell)
    x = torch.randn(I, dtype=DT)
    is_lstm = cls is lstmkit.LSTMCell
    hx = tuple(torch.randn(H, dtype=DT) for _ in range(2)) if is_lstm else torch.randn(H, dtype=DT)
    got = cell(x, hx)
    want = cell_forward(cell, x.unsqueeze(0),
                        tuple(s.unsqueeze(0) for s in hx) if is_lstm else hx.unsqueeze(0))
    got, want = (got, want) if is_lstm else ((got,), (want,))
    for g, w in zip(got, want):
        _assert_close(g, w.squeeze(0), "unbatched cell")


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS[1:])
def test_cell_equals_one_step_of_layer(peephole, coupled):
    """LSTMCell and a 1-step LSTM with the same parameters agree."""
    _seed("cell-layer", peephole, coupled)
    layer = lstmkit.LSTM(I, H, peephole=peephole, coupled=coupled, dtype=DT)
    _perturb_params(layer)
    cell = lstmkit.LSTMCell(I, H, peephole=peephole, coupled=coupled, dtype=DT)
    with torch.no_grad():
        for name, p in cell.named_parameters():
            p.copy_(getattr(layer, name + "_l0"))
    x = torch.randn(1, B, I, dtype=DT)
    h0, c0 = torch.randn(1, B, H, dtype=DT), torch.randn(1, B, H, dtype=DT)
    _, (h1, c1) = layer(x, (h0, c0))
    h, c = cell(x[0], (h0[0], c0[0]))
    _assert_close(h, h1[0], "h")
    _assert_close(c, c1[0], "c")


def test_task_cell_names_build_both_gru_forms():
    """--cell gru is torch's GRU (reset after the product), --cell gru-cho Cho et al.'s."""
    from lstmkit.tasks.models import make_rnn

    torch_form, cho_form = make_rnn("gru", 3, 4), make_rnn("gru-cho", 3, 4)
    assert torch_form.cell.reset_after and not cho_form.cell.reset_after
    assert [p.shape for p in torch_form.parameters()] == [p.shape for p in cho_form.parameters()]
