"""lstmkit.init: the biases land in the gate rows the cells read (seen through a trace's gates at
t = 1 with zero input and zero state, where each gate is sigma(b_ih + b_hh)), orthogonal blocks,
every layer and direction, torch.nn modules, coupled and peephole layouts."""

import math

import pytest
import torch
from torch import nn

import lstmkit
from lstmkit.init import chrono_init_, forget_bias, orthogonal_recurrent_, unit_forget_bias_

T, B, I, H = 3, 2, 3, 4
SIGMA_1 = 1 / (1 + math.exp(-1))


def _first_gates(layer):
    """Each direction's gates at its first step (time 0 forward, T - 1 reverse) of layer 0 for
    zero input and zero initial state: {name: (1, B, H)}."""
    x = torch.zeros(T, B, layer.input_size, dtype=layer.weight_ih_l0.dtype)
    trace = layer.trace(x)
    return [{k: v[[T - 1 if d else 0]] for k, v in step.gates.items()}
            for d, step in enumerate(trace.steps[0])]


def _suffixes(layer):
    return [f"_l{k}{d}" for k in range(layer.num_layers)
            for d in ([""] + (["_reverse"] if layer.bidirectional else []))]


# ----------------------------------------------------------------------------- unit forget bias
@pytest.mark.parametrize("variant", [{}, {"peephole": True}, {"coupled": True},
                                     {"coupled": True, "peephole": True}, {"proj_size": 2}])
def test_unit_forget_bias_through_the_trace(variant):
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, **variant)
    before = {k: v.detach().clone() for k, v in lstm.named_parameters()}
    assert unit_forget_bias_(lstm) is lstm
    for gates in _first_gates(lstm):
        torch.testing.assert_close(gates["f"][0], torch.full((B, H), SIGMA_1))
        if variant.get("coupled"):
            torch.testing.assert_close(gates["i"][0], torch.full((B, H), 1 - SIGMA_1))
    rows = slice(0, H) if variant.get("coupled") else slice(H, 2 * H)
    for sfx in _suffixes(lstm):                                 # every layer and direction
        b_ih, b_hh = getattr(lstm, "bias_ih" + sfx), getattr(lstm, "bias_hh" + sfx)
        assert torch.equal(b_ih[rows], torch.ones(H)) and torch.equal(b_hh[rows], torch.zeros(H))
    for name, p in lstm.named_parameters():                     # the other rows untouched
        keep = torch.ones_like(p, dtype=torch.bool)
        if name.startswith("bias"):
            keep[rows] = False
        assert torch.equal(p[keep], before[name][keep]), name


def test_unit_forget_bias_gru_sets_the_update_gate():
    torch.manual_seed(0)
    gru = unit_forget_bias_(lstmkit.GRU(I, H, bidirectional=True))
    for gates in _first_gates(gru):
        torch.testing.assert_close(gates["z"][0], torch.full((B, H), SIGMA_1))
    assert [b.tolist() for b in forget_bias(gru)] == [[1.0] * H] * 2


def test_unit_forget_bias_torch_lstm_has_the_same_layout():
    torch.manual_seed(0)
    ref = unit_forget_bias_(nn.LSTM(I, H, num_layers=2))
    assert torch.equal(ref.bias_ih_l1[H:2 * H], torch.ones(H))
    assert torch.equal(ref.bias_hh_l1[H:2 * H], torch.zeros(H))
    ours = lstmkit.LSTM(I, H, num_layers=2)
    ours.load_state_dict(ref.state_dict())
    (gates,) = _first_gates(ours)
    torch.testing.assert_close(gates["f"][0], torch.full((B, H), SIGMA_1))


@pytest.mark.parametrize("make", [lambda: lstmkit.LSTMCell(I, H), lambda: nn.LSTMCell(I, H),
                                  lambda: lstmkit.LSTMCell(I, H, coupled=True),
                                  lambda: nn.GRUCell(I, H)])
def test_unit_forget_bias_cells(make):
    cell = unit_forget_bias_(make())
    (bias,) = forget_bias(cell)
    assert torch.equal(bias, torch.ones(H))
    # one step from zero input and state: c_1 = i * g, and f is visible in the next step
    if isinstance(cell, (lstmkit.LSTMCell, nn.LSTMCell)):
        zero = torch.zeros(1, I)
        c0 = torch.ones(1, H)
        _, c1 = cell(zero, (torch.zeros(1, H), c0))
        _, c1_from_zero = cell(zero, (torch.zeros(1, H), torch.zeros(1, H)))
        torch.testing.assert_close(c1 - c1_from_zero, torch.full((1, H), SIGMA_1))  # f * c_0


def test_init_reaches_layers_inside_a_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(I, I), lstmkit.LSTM(I, H), nn.GRU(H, H))
    unit_forget_bias_(model)
    assert [b.tolist() for b in forget_bias(model)] == [[1.0] * H] * 2


# ----------------------------------------------------------------------------- chrono
def test_chrono_lstm_rows_and_range():
    t_max = 50
    lstm = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True)
    chrono_init_(lstm, t_max, generator=torch.Generator().manual_seed(0))
    for sfx in _suffixes(lstm):
        b_ih, b_hh = getattr(lstm, "bias_ih" + sfx), getattr(lstm, "bias_hh" + sfx)
        b_f, b_i = b_ih[H:2 * H], b_ih[:H]
        assert bool((b_f >= 0).all() and (b_f <= math.log(t_max - 1) + 1e-6).all())
        assert torch.equal(b_i, -b_f)
        assert torch.equal(b_hh[:2 * H], torch.zeros(2 * H))
    f = _first_gates(lstm)[0]["f"][0]
    torch.testing.assert_close(f, torch.sigmoid(lstm.bias_ih_l0[H:2 * H]).expand(B, H))
    # the draws spread: not all equal, and differ between layers and directions
    assert len({round(float(v), 6) for v in torch.cat(forget_bias(lstm))}) == 4 * H


def test_chrono_is_reproducible_with_a_generator():
    a = chrono_init_(lstmkit.LSTM(I, H), 20, generator=torch.Generator().manual_seed(3))
    b = chrono_init_(lstmkit.LSTM(I, H), 20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.bias_ih_l0[:2 * H], b.bias_ih_l0[:2 * H])          # i and f rows


def test_chrono_coupled_has_no_input_rows():
    lstm = lstmkit.LSTM(I, H, coupled=True)
    g_o = lstm.bias_ih_l0[H:].detach().clone()
    chrono_init_(lstm, 10)
    b_f = lstm.bias_ih_l0[:H]
    assert bool((b_f >= 0).all() and (b_f <= math.log(9) + 1e-6).all())
    assert torch.equal(lstm.bias_ih_l0[H:], g_o)                 # g, o rows untouched
    gates = _first_gates(lstm)[0]
    torch.testing.assert_close(gates["i"][0], 1 - torch.sigmoid(b_f).expand(B, H))


def test_chrono_gru_and_torch_modules():
    gru = chrono_init_(lstmkit.GRU(I, H), 10, generator=torch.Generator().manual_seed(0))
    b_z = gru.bias_ih_l0[H:2 * H]
    assert torch.equal(gru.bias_hh_l0[H:2 * H], torch.zeros(H))
    torch.testing.assert_close(_first_gates(gru)[0]["z"][0], torch.sigmoid(b_z).expand(B, H))
    ref = chrono_init_(nn.LSTM(I, H, dtype=torch.float64), 10,
                       generator=torch.Generator().manual_seed(0))
    assert ref.bias_ih_l0.dtype == torch.float64
    assert torch.equal(ref.bias_ih_l0[:H], -ref.bias_ih_l0[H:2 * H])


# ----------------------------------------------------------------------------- orthogonal
def _assert_blocks_orthogonal(w_hh, n_blocks, gain=1.0):
    for block in w_hh.detach().double().split(w_hh.shape[0] // n_blocks):
        eye = torch.eye(block.shape[1], dtype=torch.float64)
        torch.testing.assert_close(block.t() @ block, gain ** 2 * eye, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make, n_blocks", [
    (lambda: lstmkit.LSTM(I, H, num_layers=2, bidirectional=True), 4),
    (lambda: lstmkit.LSTM(I, H, coupled=True, peephole=True), 3),
    (lambda: lstmkit.LSTM(I, H, proj_size=2), 4),
    (lambda: lstmkit.GRU(I, H, num_layers=2), 3),
    (lambda: lstmkit.RNN(I, H), 1),
    (lambda: nn.LSTM(I, H, num_layers=2, bidirectional=True), 4),
    (lambda: nn.GRU(I, H), 3),
    (lambda: lstmkit.LSTMCell(I, H), 4),
    (lambda: nn.LSTMCell(I, H), 4),
])
def test_orthogonal_recurrent_blocks(make, n_blocks):
    module = make()
    w_ih = {k: v.detach().clone() for k, v in module.named_parameters() if "weight_ih" in k}
    assert orthogonal_recurrent_(module, gain=1.5) is module
    weights = [p for k, p in module.named_parameters() if k.startswith("weight_hh")]
    assert weights
    for w in weights:
        _assert_blocks_orthogonal(w, n_blocks, gain=1.5)
    for k, v in w_ih.items():
        assert torch.equal(dict(module.named_parameters())[k], v)


def test_torch_lstm_still_runs_after_init():
    lstm = orthogonal_recurrent_(unit_forget_bias_(nn.LSTM(I, H)))
    out, _ = lstm(torch.randn(T, B, I))
    assert out.shape == (T, B, H)


# ----------------------------------------------------------------------------- errors
def test_errors_are_plain():
    with pytest.raises(TypeError, match="no forget or update gate"):
        unit_forget_bias_(lstmkit.RNN(I, H))
    with pytest.raises(ValueError, match="bias=False"):
        unit_forget_bias_(lstmkit.LSTM(I, H, bias=False))
    with pytest.raises(TypeError, match="expected an LSTM, GRU or RNN"):
        orthogonal_recurrent_(nn.Linear(I, H))
    with pytest.raises(ValueError, match="t_max"):
        chrono_init_(lstmkit.LSTM(I, H), 1)


# ----------------------------------------------------------------------------- the trainer's --init
def test_trainer_combines_chrono_and_orthogonal():
    from lstmkit.config import defaults_for
    from lstmkit.tasks import make_task
    from lstmkit.train import initialise

    cfg = defaults_for("adding")
    cfg.hidden, cfg.length, cfg.init = H, 50, "chrono+orthogonal"
    torch.manual_seed(0)
    model = make_task(cfg).build_model()
    initialise(model, cfg)
    _assert_blocks_orthogonal(model.rnn.weight_hh_l0, 4)
    b_f = forget_bias(model.rnn)[0]
    assert torch.all((b_f >= 0) & (b_f <= math.log(cfg.length - 1) + 1e-6))    # log U[1, T-1]
    i_rows = slice(0, H)
    torch.testing.assert_close(model.rnn.bias_ih_l0[i_rows] + model.rnn.bias_hh_l0[i_rows], -b_f)
