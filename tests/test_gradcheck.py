"""torch.autograd.gradcheck (float64, finite differences) of the hand-written BPTT engine for
every cell family and variant: parameters, input and initial state are all gradcheck inputs
(through torch.func.functional_call)."""

import zlib

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

DT = torch.float64
T, B, I, H, P = 4, 3, 2, 3, 2
LENGTHS = (4, 2, 1)


def _seed(*parts) -> None:
    torch.manual_seed(zlib.crc32(repr(parts).encode()))


def _params(module):
    names = [n for n, _ in module.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in module.parameters())
    return names, values


def _check_layer(module, x, states=(), lengths=None, packed=False, fast=False):
    """gradcheck of (output, h_n[, c_n]) w.r.t. x, the initial states and every parameter."""
    names, values = _params(module)
    k = len(states)

    def f(x, *rest):
        st, params = rest[:k], rest[k:]
        hx = None if k == 0 else (tuple(st) if k == 2 else st[0])
        kwargs = {}
        inp = x
        if packed:
            inp = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False,
                                       batch_first=module.batch_first)
        elif lengths is not None:
            kwargs["lengths"] = lengths
        out, hidden = functional_call(module, dict(zip(names, params)), (inp, hx), kwargs)
        if packed:
            out = out.data
        return (out, *hidden) if isinstance(hidden, tuple) else (out, hidden)

    assert gradcheck(f, (x, *states, *values), eps=1e-6, atol=1e-7, rtol=1e-5,
                     fast_mode=fast)


def _x(batch_first=False, batch=B):
    shape = (batch, T, I) if batch_first else (T, batch, I)
    return torch.randn(*shape, dtype=DT, requires_grad=True)


def _states(n, layers, D, out_size, hidden=H, batch=B):
    sizes = (out_size, hidden)[:n]
    return tuple(torch.randn(layers * D, batch, s, dtype=DT, requires_grad=True) for s in sizes)


LSTM_VARIANTS = [
    pytest.param(False, False, id="plain"),
    pytest.param(True, False, id="peephole"),
    pytest.param(False, True, id="coupled"),
    pytest.param(True, True, id="peephole+coupled"),
]
PROJ = [pytest.param(0, id="noproj"), pytest.param(P, id="proj")]


# ------------------------------------------------------------------ LSTM
@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS)
@pytest.mark.parametrize("proj", PROJ)
def test_lstm_one_layer(peephole, coupled, proj):
    _seed("lstm1", peephole, coupled, proj)
    mod = lstmkit.LSTM(I, H, proj_size=proj, peephole=peephole, coupled=coupled,
                       engine="python", dtype=DT)
    _check_layer(mod, _x())


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS)
@pytest.mark.parametrize("proj", PROJ)
def test_lstm_one_layer_with_initial_state(peephole, coupled, proj):
    _seed("lstm1h", peephole, coupled, proj)
    mod = lstmkit.LSTM(I, H, proj_size=proj, peephole=peephole, coupled=coupled,
                       engine="python", dtype=DT)
    _check_layer(mod, _x(), _states(2, 1, 1, proj or H))


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS)
@pytest.mark.parametrize("proj", PROJ)
def test_lstm_one_layer_lengths_with_initial_state(peephole, coupled, proj):
    _seed("lstm1l", peephole, coupled, proj)
    mod = lstmkit.LSTM(I, H, proj_size=proj, peephole=peephole, coupled=coupled,
                       engine="python", dtype=DT)
    _check_layer(mod, _x(), _states(2, 1, 1, proj or H), lengths=LENGTHS)


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS)
@pytest.mark.parametrize("proj", PROJ)
def test_lstm_two_layer_bidirectional_packed(peephole, coupled, proj):
    """2 layers, both directions, an unsorted PackedSequence and an initial state."""
    _seed("lstm2p", peephole, coupled, proj)
    mod = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=proj,
                       peephole=peephole, coupled=coupled, engine="python", dtype=DT)
    _check_layer(mod, _x(), _states(2, 2, 2, proj or H), lengths=(2, 4, 1), packed=True)


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS[1:])
def test_lstm_two_layer_bidirectional_lengths_full(peephole, coupled):
    """2 layers, both directions, a padded batch whose longest length is below T."""
    _seed("lstm2full", peephole, coupled)
    mod = lstmkit.LSTM(I, 2, num_layers=2, bidirectional=True, proj_size=1,
                       peephole=peephole, coupled=coupled, engine="python", dtype=DT)
    x = torch.randn(4, 2, I, dtype=DT, requires_grad=True)
    states = tuple(torch.randn(4, 2, s, dtype=DT, requires_grad=True) for s in (1, 2))
    _check_layer(mod, x, states, lengths=(3, 2))


@pytest.mark.parametrize("peephole,coupled", LSTM_VARIANTS[1:])
def test_lstm_batch_first_no_bias(peephole, coupled):
    _seed("lstm-bf", peephole, coupled)
    mod = lstmkit.LSTM(I, H, bias=False, batch_first=True, peephole=peephole, coupled=coupled,
                       engine="python", dtype=DT)
    _check_layer(mod, _x(batch_first=True), _states(2, 1, 1, H), lengths=LENGTHS)


# ------------------------------------------------------------------ GRU and RNN
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gru_one_layer(reset_after, bias):
    _seed("gru1", reset_after, bias)
    mod = lstmkit.GRU(I, H, bias=bias, reset_after=reset_after, engine="python", dtype=DT)
    _check_layer(mod, _x(), _states(1, 1, 1, H), lengths=LENGTHS)
    _check_layer(mod, _x())


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_gru_two_layer_bidirectional_packed(reset_after):
    _seed("gru2", reset_after)
    mod = lstmkit.GRU(I, H, num_layers=2, bidirectional=True, reset_after=reset_after,
                      engine="python", dtype=DT)
    _check_layer(mod, _x(), _states(1, 2, 2, H), lengths=(2, 4, 1), packed=True)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn(nonlinearity):
    _seed("rnn", nonlinearity)
    mod = lstmkit.RNN(I, H, nonlinearity=nonlinearity, engine="python", dtype=DT)
    _check_layer(mod, _x(), _states(1, 1, 1, H))
    mod2 = lstmkit.RNN(I, H, num_layers=2, nonlinearity=nonlinearity, bidirectional=True,
                       engine="python", dtype=DT)
    _check_layer(mod2, _x(), _states(1, 2, 2, H), lengths=LENGTHS)


# ------------------------------------------------------------------ single-step cells
CELLS = [
    pytest.param(lstmkit.LSTMCell, {"engine": "python"}, id="lstm-plain"),
    pytest.param(lstmkit.LSTMCell, {"peephole": True}, id="lstm-peephole"),
    pytest.param(lstmkit.LSTMCell, {"coupled": True}, id="lstm-coupled"),
    pytest.param(lstmkit.LSTMCell, {"peephole": True, "coupled": True}, id="lstm-both"),
    pytest.param(lstmkit.GRUCell, {"engine": "python"}, id="gru-reset-after"),
    pytest.param(lstmkit.GRUCell, {"reset_after": False}, id="gru-reset-before"),
    pytest.param(lstmkit.RNNCell, {"engine": "python"}, id="rnn-tanh"),
    pytest.param(lstmkit.RNNCell, {"nonlinearity": "relu", "engine": "python"}, id="rnn-relu"),
]


@pytest.mark.parametrize("cls,kwargs", CELLS)
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
def test_cell(cls, kwargs, with_hx):
    _seed("cell", cls.__name__, str(kwargs), with_hx)
    cell = cls(I, H, dtype=DT, **kwargs)
    names, values = _params(cell)
    n_states = 2 if cls is lstmkit.LSTMCell else 1
    states = ()
    if with_hx:
        states = tuple(torch.randn(B, H, dtype=DT, requires_grad=True) for _ in range(n_states))

    def f(x, *rest):
        st, params = rest[: len(states)], rest[len(states):]
        hx = None if not st else (tuple(st) if n_states == 2 else st[0])
        out = functional_call(cell, dict(zip(names, params)), (x, hx))
        return out if isinstance(out, tuple) else (out,)

    x = torch.randn(B, I, dtype=DT, requires_grad=True)
    assert gradcheck(f, (x, *states, *values), eps=1e-6, atol=1e-7, rtol=1e-5)
