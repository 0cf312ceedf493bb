"""Bad input and bad arguments: an error whose message names what was expected and what came,
raised by lstmkit before anything reaches torch's kernels, of the class torch.nn raises for the
same mistake (tests/test_torch_contract.py compares the classes with torch.nn's)."""

from __future__ import annotations

import re

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

I, H, T, B = 3, 4, 5, 2
ENGINES = ("python", "torch")
LAYERS = ("LSTM", "GRU", "RNN")


def layer(cls="LSTM", engine="python", **kw):
    return getattr(lstmkit, cls)(I, H, engine=engine, **kw)


def x(*shape, dtype=torch.float32):
    return torch.randn(shape, dtype=dtype) if dtype.is_floating_point else \
        torch.ones(shape, dtype=dtype)


def hx_for(cls, *shape_h, shape_c=None, dtype=torch.float32):
    h = torch.zeros(*shape_h, dtype=dtype)
    if cls != "LSTM":
        return h
    return h, torch.zeros(*(shape_c or shape_h), dtype=dtype)


# ------------------------------------------------------------------ input shape and dtype
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", [(I,), (2, T, B, I)], ids=["1d", "4d"])
def test_wrong_number_of_dimensions(cls, engine, shape):
    with pytest.raises(ValueError, match=rf"{cls}: expected input of shape "
                       rf"\(L, H_in\) unbatched or \(L, N, H_in\) batched, got {len(shape)} "
                       rf"dimensions with shape {re.escape(str(shape))}"):
        layer(cls, engine)(x(*shape))


def test_wrong_number_of_dimensions_batch_first_names_its_layout():
    with pytest.raises(ValueError, match=r"\(N, L, H_in\) batched, got 4 dimensions"):
        layer(batch_first=True)(x(1, B, T, I))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", [(T, B, I + 2), (T, I + 2)], ids=["batched", "unbatched"])
def test_wrong_feature_size(cls, engine, shape):
    with pytest.raises(RuntimeError, match=rf"expected {I} input features \(input_size\), "
                       rf"got {I + 2}"):
        layer(cls, engine)(x(*shape))


def test_wrong_feature_size_packed():
    packed = pack_padded_sequence(x(T, B, I + 1), [T, 2])
    with pytest.raises(RuntimeError, match=rf"expected {I} input features.*got {I + 1}"):
        layer()(packed)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", [(0, B, I), (0, I), (0, 0, I)],
                         ids=["empty-sequence", "empty-unbatched", "empty-both"])
def test_no_time_step(cls, engine, shape):
    """torch.nn raises RuntimeError for L = 0 (an empty batch it takes: test_torch_contract)."""
    shape_txt = re.escape("(" + ", ".join(map(str, shape)) + ")")
    with pytest.raises(RuntimeError, match=rf"{cls}: expected at least one time step, got "
                       rf"input of shape {shape_txt}"):
        layer(cls, engine)(x(*shape))


def test_empty_batch_batch_first():
    out, (h, c) = layer(batch_first=True)(x(0, T, I))
    assert out.shape == (0, T, H) and h.shape == c.shape == (1, 0, H)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_input(cls, engine, dtype):
    with pytest.raises(ValueError, match=rf"expected a floating-point input.*got {dtype}"):
        layer(cls, engine)(x(T, B, I, dtype=dtype))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("engine", ENGINES)
def test_input_dtype_differs_from_parameters(cls, engine):
    with pytest.raises(ValueError, match=r"expected input of dtype torch.float32 like the "
                       r"parameters, got torch.float64"):
        layer(cls, engine)(x(T, B, I, dtype=torch.float64))


def test_input_not_a_tensor():
    with pytest.raises(TypeError, match=r"expected the input as a torch.Tensor or a "
                       r"PackedSequence, got list"):
        layer()([[0.0] * I] * T)


# ------------------------------------------------------------------ initial states
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_h0_shape(cls, engine):
    m = layer(cls, engine, num_layers=2)
    with pytest.raises(RuntimeError, match=r"expected h_0 of shape \(2, 2, 4\).*got \(1, 2, 4\)"):
        m(x(T, B, I), hx_for(cls, 1, B, H))


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_c0_shape(engine):
    m = layer("LSTM", engine, proj_size=2)
    with pytest.raises(RuntimeError, match=r"expected c_0 of shape \(1, 2, 4\).*got \(1, 2, 2\)"):
        m(x(T, B, I), (torch.zeros(1, B, 2), torch.zeros(1, B, 2)))


@pytest.mark.parametrize("cls", LAYERS)
def test_wrong_hx_shape_unbatched(cls):
    with pytest.raises(RuntimeError, match=r"expected h_0 of shape \(1, 4\).*got \(1, 1, 4\)"):
        layer(cls)(x(T, I), hx_for(cls, 1, 1, H))


@pytest.mark.parametrize("cls", LAYERS)
def test_wrong_hx_batch_for_packed_input(cls):
    packed = pack_padded_sequence(x(T, B, I), [3, 5], enforce_sorted=False)
    with pytest.raises(RuntimeError, match=r"expected h_0 of shape \(1, 2, 4\).*got \(1, 3, 4\)"):
        layer(cls)(packed, hx_for(cls, 1, 3, H))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_hx_dtype(cls, engine):
    with pytest.raises(RuntimeError, match=r"expected h_0 of dtype torch.float32 like the input, "
                       r"got torch.float64"):
        layer(cls, engine)(x(T, B, I), hx_for(cls, 1, B, H, dtype=torch.float64))


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_c0_dtype(engine):
    hx = (torch.zeros(1, B, H), torch.zeros(1, B, H, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"expected c_0 of dtype torch.float32.*got "
                       r"torch.float64"):
        layer("LSTM", engine)(x(T, B, I), hx)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("hx,error,got", [
    (torch.zeros(1, B, H), TypeError, "Tensor"),
    ((torch.zeros(1, B, H),), RuntimeError, "tuple of 1"),
    ((torch.zeros(1, B, H),) * 3, RuntimeError, "tuple of 3"),
])
def test_lstm_hx_not_a_pair(engine, hx, error, got):
    with pytest.raises(error, match=rf"expected hx as a tuple \(h_0, c_0\), got {got}"):
        layer("LSTM", engine)(x(T, B, I), hx)


@pytest.mark.parametrize("cls", ["GRU", "RNN"])
def test_gru_rnn_hx_as_tuple(cls):
    with pytest.raises(TypeError, match=r"expected h_0 as a torch.Tensor, got tuple"):
        layer(cls)(x(T, B, I), (torch.zeros(1, B, H),))


def test_hx_element_not_a_tensor():
    with pytest.raises(TypeError, match=r"expected h_0 as a torch.Tensor, got NoneType"):
        layer("LSTM")(x(T, B, I), (None, torch.zeros(1, B, H)))


# ------------------------------------------------------------------ lengths
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_not_sorted(engine, batch_first):
    inp = x(B, T, I) if batch_first else x(T, B, I)
    with pytest.raises(ValueError, match=r"expected lengths sorted longest first, got \[3, 5\]"):
        layer(engine=engine, batch_first=batch_first)(inp, lengths=[3, 5])


@pytest.mark.parametrize("engine", ENGINES)
def test_lengths_exceed_sequence_length(engine):
    with pytest.raises(ValueError, match=r"between 1 and the sequence length T=5, got \[6, 2\]"):
        layer(engine=engine)(x(T, B, I), lengths=[6, 2])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("lengths", [[5, 0], [5, -1]])
def test_lengths_below_one(engine, lengths):
    with pytest.raises(ValueError, match=rf"between 1 and.*T=5, got {re.escape(str(lengths))}"):
        layer(engine=engine)(x(T, B, I), lengths=lengths)


@pytest.mark.parametrize("lengths,shape",
                         [([5], "(1,)"), ([5, 4, 3], "(3,)"), ([[5, 4]], "(1, 2)")])
def test_lengths_wrong_count(lengths, shape):
    with pytest.raises(ValueError, match=rf"expected lengths as 2 integers.*got shape "
                       rf"{re.escape(shape)}"):
        layer()(x(T, B, I), lengths=lengths)


def test_lengths_not_integers():
    with pytest.raises(TypeError, match=r"expected integer lengths, got torch.float32"):
        layer()(x(T, B, I), lengths=[5.0, 3.0])


def test_lengths_with_unbatched_input():
    with pytest.raises(ValueError, match=r"lengths needs a batched 3-D input, got shape \(5, 3\)"):
        layer()(x(T, I), lengths=[T])


def test_lengths_with_packed_input():
    packed = pack_padded_sequence(x(T, B, I), [5, 3])
    with pytest.raises(ValueError, match=r"lengths is for a padded batch"):
        layer()(packed, lengths=[5, 3])


# ------------------------------------------------------------------ engines
@pytest.mark.parametrize("cls,kw", [
    ("LSTM", {"peephole": True}), ("LSTM", {"coupled": True}),
    ("LSTM", {"peephole": True, "coupled": True}), ("GRU", {"reset_after": False}),
    ("LSTMCell", {"peephole": True}), ("LSTMCell", {"coupled": True}),
    ("GRUCell", {"reset_after": False}),
])
def test_torch_engine_rejects_variants_at_construction(cls, kw):
    with pytest.raises(ValueError, match=rf"{cls}: engine='torch'.*use engine='python'"):
        getattr(lstmkit, cls)(I, H, engine="torch", **kw)


@pytest.mark.parametrize("cls", [*LAYERS, "LSTMCell", "GRUCell", "RNNCell"])
@pytest.mark.parametrize("engine", ["cuda", "Python", ""])
def test_unknown_engine(cls, engine):
    with pytest.raises(ValueError, match=rf"engine must be one of \('auto', 'python', 'torch', "
                       rf"'compiled'\), "
                       rf"got {engine!r}"):
        getattr(lstmkit, cls)(I, H, engine=engine)


def test_engine_changed_after_construction_is_checked_at_forward():
    m = layer("LSTM", "python", peephole=True)
    m.engine = "torch"
    with pytest.raises(ValueError, match=r"engine='torch'"):
        m(x(T, B, I))


# ------------------------------------------------------------------ constructor arguments
@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("arg,value,error,says", [
    ("input_size", 0, ValueError, "must be greater than zero, got 0"),
    ("hidden_size", 0, ValueError, "must be greater than zero, got 0"),
    ("hidden_size", -3, ValueError, "must be greater than zero, got -3"),
    ("hidden_size", 4.0, TypeError, "should be of type int, got: float (4.0)"),
    ("num_layers", 0, ValueError, "must be greater than zero, got 0"),
    ("num_layers", 1.5, TypeError, "should be an integer, got: float (1.5)"),
    ("num_layers", "2", TypeError, "should be an integer, got: str ('2')"),
])
def test_sizes_must_be_positive_integers(cls, arg, value, error, says):
    kw = {"input_size": I, "hidden_size": H, "num_layers": 1, arg: value}
    with pytest.raises(error, match=rf"{cls}: {arg} {re.escape(says)}"):
        getattr(lstmkit, cls)(**kw)


@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
@pytest.mark.parametrize("arg", ["input_size", "hidden_size"])
def test_cell_sizes_must_not_be_negative(cls, arg):
    """torch.nn's cells take a size of 0 (empty weights) and raise RuntimeError below it."""
    getattr(lstmkit, cls)(**{"input_size": I, "hidden_size": H, arg: 0})
    with pytest.raises(RuntimeError, match=rf"{cls}: {arg} must be zero or more, got -1"):
        getattr(lstmkit, cls)(**{"input_size": I, "hidden_size": H, arg: -1})


@pytest.mark.parametrize("proj_size,says", [
    (H, "has to be smaller than hidden_size (4), got 4"),
    (H + 1, "has to be smaller than hidden_size (4), got 5"),
    (-1, "should be a positive integer or zero to disable projections, got -1")])
def test_proj_size_out_of_range(proj_size, says):
    with pytest.raises(ValueError, match=rf"LSTM: proj_size {re.escape(says)}"):
        lstmkit.LSTM(I, H, proj_size=proj_size)


def test_proj_size_not_an_integer():
    """Library bug: a float proj_size fails deep inside torch.empty, not naming proj_size."""
    with pytest.raises((ValueError, TypeError), match=r"proj_size.*1\.5"):
        lstmkit.LSTM(I, H, proj_size=1.5)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("dropout", [1.5, -0.1, float("nan"), "0.5"])
def test_dropout_out_of_range(cls, dropout):
    with pytest.raises(ValueError, match=rf"{cls}: dropout should be a number in \[0, 1\].*"
                       rf"got: {type(dropout).__name__} \({re.escape(repr(dropout))}\)"):
        getattr(lstmkit, cls)(I, H, 2, dropout=dropout)


def test_dropout_bool_rejected_like_torch():
    """torch.nn.LSTM rejects dropout=True; lstmkit takes it as dropout=1.0 (everything zeroed)."""
    with pytest.raises(ValueError):
        torch.nn.LSTM(I, H, 2, dropout=True)
    with pytest.raises(ValueError, match=r"dropout.*True"):
        lstmkit.LSTM(I, H, 2, dropout=True)


@pytest.mark.parametrize("cls", ["RNN", "RNNCell"])
@pytest.mark.parametrize("nonlinearity", ["sigmoid", "Tanh", None])
def test_unknown_nonlinearity(cls, nonlinearity):
    with pytest.raises(ValueError, match=rf"nonlinearity must be 'tanh' or 'relu', "
                       rf"got {re.escape(repr(nonlinearity))}"):
        getattr(lstmkit, cls)(I, H, nonlinearity=nonlinearity)


# ------------------------------------------------------------------ cells
CELLS = ("LSTMCell", "GRUCell", "RNNCell")


def cell(cls="LSTMCell", engine="python", **kw):
    return getattr(lstmkit, cls)(I, H, engine=engine, **kw)


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", [(), (B, T, I)], ids=["0d", "3d"])
def test_cell_wrong_number_of_dimensions(cls, engine, shape):
    with pytest.raises(ValueError, match=rf"expected input of shape \(N, H_in\) or \(H_in,\) "
                       rf"unbatched, got {len(shape)} dimensions"):
        cell(cls, engine)(x(*shape))


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("engine", ENGINES)
def test_cell_wrong_feature_size(cls, engine):
    with pytest.raises(RuntimeError, match=rf"expected {I} input features.*got {I + 1} in input "
                       rf"of shape \(2, 4\)"):
        cell(cls, engine)(x(B, I + 1))


def test_cell_wrong_feature_size_unbatched_names_the_shape_given():
    """Library bug: an unbatched (4,) input is reported as 'input of shape (1, 4)'."""
    with pytest.raises(RuntimeError, match=r"got 4 in input of shape \(4,?\)"):
        cell()(x(I + 1))


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("engine", ENGINES)
def test_cell_integer_and_mismatched_dtype(cls, engine):
    with pytest.raises(RuntimeError, match=r"floating-point input.*got torch.int64"):
        cell(cls, engine)(x(B, I, dtype=torch.int64))
    with pytest.raises(RuntimeError, match=r"expected input of dtype torch.float32.*got "
                       r"torch.float64"):
        cell(cls, engine)(x(B, I, dtype=torch.float64))


@pytest.mark.parametrize("cls", CELLS)
def test_cell_empty_batch(cls):
    out = cell(cls)(x(0, I))
    assert all(o.shape == (0, H) for o in (out if cls == "LSTMCell" else (out,)))


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("engine", ENGINES)
def test_cell_wrong_hx_shape(cls, engine):
    hx = torch.zeros(B + 1, H)
    hx = (hx, torch.zeros(B, H)) if cls == "LSTMCell" else hx
    with pytest.raises(RuntimeError, match=r"expected h of shape \(2, 4\).*got \(3, 4\)"):
        cell(cls, engine)(x(B, I), hx)


def test_cell_hx_shape_message_does_not_speak_of_layers():
    """Library bug: a cell's hx shape error explains the shape as
    '(num_layers * num_directions, N, H)', the layers' h_0 layout, which a cell does not have."""
    with pytest.raises(RuntimeError) as info:
        cell("GRUCell")(x(B, I), torch.zeros(B + 1, H))
    assert "num_layers" not in str(info.value)


@pytest.mark.parametrize("cls", ["GRUCell", "RNNCell"])
def test_cell_wrong_hx_dtype(cls):
    with pytest.raises(RuntimeError, match=r"expected h of dtype torch.float32.*got torch.float64"):
        cell(cls)(x(B, I), torch.zeros(B, H, dtype=torch.float64))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_lstm_cell_hx_not_a_tuple(engine, batch):
    """Library bug: a single Tensor hx is unpacked along its batch dimension, so the error
    depends on the batch size: a TypeError without saying what came, or (batch 2) a ValueError
    about h's shape that never mentions the tuple."""
    with pytest.raises(TypeError, match=r"expected hx as a tuple \(h, c\), got Tensor"):
        cell("LSTMCell", engine)(x(batch, I), torch.zeros(batch, H))
