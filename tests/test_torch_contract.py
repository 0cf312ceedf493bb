"""lstmkit's layers and cells against torch.nn 2.13's: which constructor arguments and which
forward inputs each accepts or rejects (and with which exception class), the RNNBase surface
libraries read, the repr, an empty batch, and torch.ao's dynamic quantization."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

I, H, T, B = 3, 4, 5, 2
LAYERS = ("LSTM", "GRU", "RNN")
CELLS = ("LSTMCell", "GRUCell", "RNNCell")
ENGINES = ("python", "compiled", "torch", "auto")


def outcome(fn):
    """None when fn() returns, else the class of what it raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn()
        except Exception as e:                 # noqa: BLE001 - the class is what is compared
            return type(e)
    return None


# ------------------------------------------------------------------ constructor arguments
LAYER_VALUES = {
    "input_size": [0, -1, 1.5, 3.0, True, "3", None, np.int64(3)],
    "hidden_size": [0, -1, 1.5, True, "4", None, np.int64(4), 1],
    "num_layers": [0, -1, -1.0, 1.5, 2.0, True, False, "2", None, np.int64(2)],
    "bias": ["False", 0, 1, None, np.bool_(False), False],
    "batch_first": [1, "True", None, np.bool_(True), True],
    "dropout": [-0.1, 1.5, float("nan"), float("inf"), True, "0.5", "x", None, 1j, 0, 1, 0.5,
                np.float64(0.5)],
    "bidirectional": [1, 0, "yes", None, True],
    "proj_size": [-1, 4, 5, 1.5, 2.0, 0.0, True, False, None, np.int64(2), 0, 2],
    "nonlinearity": ["sigmoid", "Tanh", None, "relu", "tanh"],
    "dtype": [torch.float64, torch.int64, torch.float16, torch.bfloat16, "float32"],
}
CELL_VALUES = {
    "input_size": [0, -1, 1.5, 3.0, True, "3", None, np.int64(3)],
    "hidden_size": [0, -1, 1.5, True, "4", None, np.int64(4), 1],
    "bias": ["False", 0, 1, None, np.bool_(False), False],
    "nonlinearity": ["relu", "tanh"],
    "dtype": [torch.float64, torch.int64, torch.float16, "float32"],
}
# Where lstmkit departs on purpose: torch.nn.RNN(3, True) fails inside torch.empty (a bool as
# the first size), while LSTM(3, True) and GRU(3, True) pass: lstmkit takes True as 1 for all
CONSTRUCTOR_DEPARTURES = {("RNN", "hidden_size", True)}


def constructor_cases():
    for cls in LAYERS + CELLS:
        values = CELL_VALUES if cls in CELLS else LAYER_VALUES
        for arg, vals in values.items():
            if arg == "nonlinearity" and cls not in ("RNN", "RNNCell"):
                continue
            for v in vals:
                if (cls, arg, v) not in CONSTRUCTOR_DEPARTURES:
                    yield pytest.param(cls, arg, v, id=f"{cls}-{arg}-{v!r}")


@pytest.mark.parametrize("cls,arg,value", constructor_cases())
def test_constructor_raises_as_torch(cls, arg, value):
    """lstmkit raises exactly when torch.nn raises, with the same exception class."""
    kw = {"input_size": I, "hidden_size": H, arg: value}
    if cls in LAYERS and arg != "num_layers":
        kw["num_layers"] = 2
    expected = outcome(lambda: getattr(nn, cls)(**kw))
    assert outcome(lambda: getattr(lstmkit, cls)(**kw)) is expected


@pytest.mark.parametrize("cls", ["GRU", "RNN"])
@pytest.mark.parametrize("proj_size", [0, 2])
def test_proj_size_keyword_refused_by_gru_and_rnn(cls, proj_size):
    assert outcome(lambda: getattr(nn, cls)(I, H, proj_size=proj_size)) is ValueError
    with pytest.raises(ValueError, match=rf"{cls}: proj_size argument is only supported for LSTM"):
        getattr(lstmkit, cls)(I, H, proj_size=proj_size)


def test_rnn_cell_nonlinearity_checked_at_construction():
    """Departure: torch.nn.RNNCell takes any nonlinearity and raises RuntimeError at its first
    call; lstmkit raises ValueError at once (no program that runs under torch is refused)."""
    torch_cell = nn.RNNCell(I, H, nonlinearity="sigmoid")
    assert outcome(lambda: torch_cell(torch.zeros(B, I))) is RuntimeError
    with pytest.raises(ValueError, match=r"RNNCell: nonlinearity must be 'tanh' or 'relu', "
                       r"got 'sigmoid'"):
        lstmkit.RNNCell(I, H, nonlinearity="sigmoid")


def test_messages_name_layer_argument_and_value():
    with pytest.raises(TypeError, match=r"^LSTM: bias should be of type bool, got: str "
                       r"\('False'\)$"):
        lstmkit.LSTM(I, H, bias="False")
    with pytest.raises(TypeError, match=r"GRU: batch_first should be of type bool, got: int \(1\)"):
        lstmkit.GRU(I, H, batch_first=1)
    with pytest.raises(ValueError, match=r"RNN: hidden_size must be greater than zero, got 0"):
        lstmkit.RNN(I, 0)


def test_string_bias_of_a_cell_is_taken_as_torch_takes_it_with_a_warning():
    with pytest.warns(UserWarning, match=r"LSTMCell: bias should be of type bool, got: str "
                      r"\('False'\); like torch.nn.LSTMCell this cell takes it as True"):
        cell = lstmkit.LSTMCell(I, H, bias="False")
    assert cell.bias_ih is not None and nn.LSTMCell(I, H, bias="False").bias_ih is not None


def test_dropout_with_one_layer_warns_as_torch():
    with pytest.warns(UserWarning, match=r"dropout"):
        nn.LSTM(I, H, dropout=0.5)
    with pytest.warns(UserWarning, match=r"LSTM: dropout applies between layers"):
        lstmkit.LSTM(I, H, dropout=0.5)


@pytest.mark.parametrize("cls,flag", [
    ("LSTM", "peephole"), ("LSTM", "coupled"), ("GRU", "reset_after"),
    ("LSTMCell", "peephole"), ("LSTMCell", "coupled"), ("GRUCell", "reset_after"),
])
@pytest.mark.parametrize("value", [1, 0, "True", None])
def test_lstmkit_flags_must_be_bools(cls, flag, value):
    with pytest.raises(TypeError, match=rf"{cls}: {flag} should be of type bool, got: "
                       rf"{type(value).__name__}"):
        getattr(lstmkit, cls)(I, H, **{flag: value})


@pytest.mark.parametrize("cls", LAYERS + CELLS)
def test_unknown_engine_is_a_value_error(cls):
    with pytest.raises(ValueError, match=rf"{cls}: engine must be one of"):
        getattr(lstmkit, cls)(I, H, engine="gpu")


# ------------------------------------------------------------------ the RNNBase surface
CONFIGS = [
    ("LSTM", {}), ("LSTM", {"num_layers": 2, "bidirectional": True}),
    ("LSTM", {"proj_size": 2, "num_layers": 2}), ("LSTM", {"bias": False, "proj_size": 3}),
    ("GRU", {"num_layers": 3, "batch_first": True, "dropout": 0.25}),
    ("GRU", {"bias": False, "bidirectional": True}),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2}), ("RNN", {"bidirectional": True}),
]
ATTRS = ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
         "bidirectional", "proj_size", "_flat_weights_names", "_all_weights")


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=[f"{c}-{k}" for c, k in CONFIGS])
def test_rnnbase_surface_equals_torch(cls, kw):
    ours, theirs = getattr(lstmkit, cls)(I, 6, **kw), getattr(nn, cls)(I, 6, **kw)
    for attr in ATTRS:
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert repr(ours) == repr(theirs)
    assert ours.flatten_parameters() is None
    names = [n for names in ours._all_weights for n in names]
    assert ours._flat_weights == [getattr(ours, n) for n in ours._flat_weights_names]
    assert [[w.shape for w in ws] for ws in ours.all_weights] == \
        [[w.shape for w in ws] for ws in theirs.all_weights]
    assert [p for ws in ours.all_weights for p in ws] == [getattr(ours, n) for n in names]


@pytest.mark.parametrize("cls,kw", [("LSTMCell", {}), ("GRUCell", {"bias": False}),
                                    ("RNNCell", {"nonlinearity": "relu"}), ("RNNCell", {})])
def test_cell_attributes_and_repr_equal_torch(cls, kw):
    ours, theirs = getattr(lstmkit, cls)(10, 20, **kw), getattr(nn, cls)(10, 20, **kw)
    assert repr(ours) == repr(theirs)
    for attr in ("input_size", "hidden_size", "bias", "nonlinearity"):
        assert getattr(ours, attr, None) == getattr(theirs, attr, None)


def test_repr_shows_variant_keywords_only_off_their_defaults():
    assert repr(lstmkit.LSTM(10, 20)) == "LSTM(10, 20)"
    assert repr(lstmkit.LSTM(10, 20, 2, batch_first=True, engine="compiled")) == \
        "LSTM(10, 20, num_layers=2, batch_first=True)"
    assert repr(lstmkit.LSTM(10, 20, peephole=True, engine="python")) == \
        "LSTM(10, 20, peephole=True)"
    assert repr(lstmkit.GRUCell(10, 20, reset_after=False)) == "GRUCell(10, 20, reset_after=False)"


def test_peepholes_in_all_weights_not_in_flat_weights():
    m = lstmkit.LSTM(I, H, 2, bidirectional=True, peephole=True)
    assert m._flat_weights_names == nn.LSTM(I, H, 2, bidirectional=True)._flat_weights_names
    assert [names[-1] for names in m._all_weights] == \
        ["weight_ch_l0", "weight_ch_l0_reverse", "weight_ch_l1", "weight_ch_l1_reverse"]
    assert m.all_weights[1][-1] is m.weight_ch_l0_reverse


def test_flat_weights_stay_current():
    """torch keeps _flat_weights current in _apply / __setattr__; here it is computed."""
    m = lstmkit.LSTM(I, H, 2)
    m.double()
    assert all(w.dtype == torch.float64 for w in m._flat_weights)
    new = nn.Parameter(torch.zeros(4 * H, I, dtype=torch.float64))
    m.weight_ih_l0 = new
    assert m._flat_weights[0] is new and m.all_weights[0][0] is new
    state = {k: torch.ones_like(v) for k, v in m.state_dict().items()}
    m.load_state_dict(state)
    assert all(bool((w == 1).all()) for w in m._flat_weights)
    out_torch_engine = m(torch.randn(T, B, I, dtype=torch.float64))[0]     # reads _flat_weights
    assert out_torch_engine.dtype == torch.float64


@pytest.mark.parametrize("cls,kw", CONFIGS[:4] + [("LSTMCell", {}), ("RNNCell", {"bias": False})])
def test_to_torch_gives_the_same_function(cls, kw):
    ours = getattr(lstmkit, cls)(I, 6, **kw, engine="python").double()
    theirs = ours.to_torch()
    assert type(theirs) is getattr(nn, cls)
    x = torch.randn(B, I, dtype=torch.float64) if "Cell" in cls else \
        torch.randn(T, B, I, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x))


def test_to_torch_refuses_variants():
    with pytest.raises(ValueError, match=r"LSTM: peephole=True has no torch.nn form"):
        lstmkit.LSTM(I, H, peephole=True).to_torch()


@pytest.mark.parametrize("cls", LAYERS + CELLS)
def test_not_an_instance_of_torch_class(cls):
    """Deliberate (lstmkit.layers' docstring): torch-typed code would run torch's kernels on it."""
    assert not isinstance(getattr(lstmkit, cls)(I, H), getattr(nn, cls))


# ------------------------------------------------------------------ forward-time input
def z(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


def layer_inputs(lstm: bool) -> dict:
    """name -> (input, hx) for a layer of input_size I, hidden_size H, one layer."""
    def hx(*shape, dtype=torch.float32):
        return (z(*shape, dtype=dtype), z(*shape, dtype=dtype)) if lstm else z(*shape, dtype=dtype)
    return {
        "ok": (z(T, B, I), None), "ok-hx": (z(T, B, I), hx(1, B, H)),
        "ok-unbatched": (z(T, I), hx(1, H)),
        "1d": (z(I), None), "4d": (z(2, T, B, I), None),
        "features": (z(T, B, I + 1), None), "features-unbatched": (z(T, I + 1), None),
        "hx-layers": (z(T, B, I), hx(2, B, H)), "hx-batch": (z(T, B, I), hx(1, B + 1, H)),
        "hx-size": (z(T, B, I), hx(1, B, H + 1)),
        "hx-float64": (z(T, B, I), hx(1, B, H, dtype=torch.float64)),
        "hx-int": (z(T, B, I), hx(1, B, H, dtype=torch.int64)),
        "unbatched-input-batched-hx": (z(T, I), hx(1, B, H)),
        "batched-input-2d-hx": (z(T, B, I), hx(1, H)),
        "input-float64": (z(T, B, I, dtype=torch.float64), None),
        "input-int": (torch.ones(T, B, I, dtype=torch.int64), None),
        "input-bool": (torch.ones(T, B, I, dtype=torch.bool), None),
        "packed": (pack_padded_sequence(z(T, B, I), [5, 3]), None),
        "packed-features": (pack_padded_sequence(z(T, B, I + 1), [5, 3]), None),
        "packed-hx-batch": (pack_padded_sequence(z(T, B, I), [5, 3]), hx(1, B + 1, H)),
        "empty-batch": (z(T, 0, I), None), "empty-batch-hx": (z(T, 0, I), hx(1, 0, H)),
        "no-step": (z(0, B, I), None), "no-step-unbatched": (z(0, I), None),
        "no-step-empty-batch": (z(0, 0, I), None),
        **({"hx-tuple-of-3": (z(T, B, I), (z(1, B, H),) * 3),
            "hx-list": (z(T, B, I), [z(1, B, H)] * 2)} if lstm else {}),
    }


def cell_inputs(lstm: bool) -> dict:
    def hx(*shape, dtype=torch.float32):
        return (z(*shape, dtype=dtype), z(*shape, dtype=dtype)) if lstm else z(*shape, dtype=dtype)
    return {
        "ok": (z(B, I), None), "ok-hx": (z(B, I), hx(B, H)), "ok-unbatched": (z(I), hx(H)),
        "0d": (z(), None), "3d": (z(B, T, I), None),
        "features": (z(B, I + 1), None), "features-unbatched": (z(I + 1), None),
        "hx-batch": (z(B, I), hx(B + 1, H)), "hx-size": (z(B, I), hx(B, H + 1)),
        "hx-3d": (z(B, I), hx(1, B, H)), "hx-float64": (z(B, I), hx(B, H, dtype=torch.float64)),
        "unbatched-input-batched-hx": (z(I), hx(B, H)), "batched-input-1d-hx": (z(B, I), hx(H)),
        "input-float64": (z(B, I, dtype=torch.float64), None),
        "input-int": (torch.ones(B, I, dtype=torch.int64), None),
        "empty-batch": (z(0, I), None), "empty-batch-hx": (z(0, I), hx(0, H)),
        **({"hx-tensor": (z(B, I), z(B, H)), "hx-tuple-of-1": (z(B, I), (z(B, H),))}
           if lstm else {}),
    }


def forward_cases():
    for cls in LAYERS + CELLS:
        lstm = cls.startswith("LSTM")
        cases = cell_inputs(lstm) if cls in CELLS else layer_inputs(lstm)
        for name, (inp, hx) in cases.items():
            yield pytest.param(cls, inp, hx, id=f"{cls}-{name}")


@pytest.mark.parametrize("engine", ["python", "torch"])
@pytest.mark.parametrize("cls,inp,hx", forward_cases())
def test_forward_raises_as_torch(cls, inp, hx, engine):
    """Each input: accepted by both, or rejected by both with the same exception class."""
    ours = getattr(lstmkit, cls)(I, H, engine=engine)
    expected = outcome(lambda: getattr(nn, cls)(I, H)(inp, hx))
    assert outcome(lambda: ours(inp, hx)) is expected


@pytest.mark.parametrize("cls,inp,hx,torch_raises", [
    ("LSTM", [[0.0] * I] * T, None, AttributeError),
    ("GRU", z(T, B, I), (z(1, B, H),), AttributeError),
    ("GRUCell", z(B, I), (z(B, H),), AttributeError),
    ("LSTM", z(T, B, I), (z(1, B, H),), IndexError),
    ("LSTM", z(T, B, I), z(1, B, H), IndexError),
], ids=["input-list", "gru-hx-tuple", "grucell-hx-tuple", "lstm-hx-tuple-of-1",
        "lstm-hx-tensor"])
def test_forward_departures_from_torch(cls, inp, hx, torch_raises):
    """Where torch fails by accident (an attribute or index missing), lstmkit raises TypeError
    for a wrong type and RuntimeError for a tuple of the wrong length, naming what came."""
    assert outcome(lambda: getattr(nn, cls)(I, H)(inp, hx)) is torch_raises
    ours = outcome(lambda: getattr(lstmkit, cls)(I, H)(inp, hx))
    assert ours is (RuntimeError if isinstance(hx, tuple) and cls == "LSTM" else TypeError)


def test_lstm_cell_c_of_another_dtype_is_refused():
    """Departure: torch's lstm_cell takes a float64 c beside a float32 h; lstmkit raises."""
    hx = (z(B, H), z(B, H, dtype=torch.float64))
    assert outcome(lambda: nn.LSTMCell(I, H)(z(B, I), hx)) is None
    with pytest.raises(RuntimeError, match=r"expected c of dtype torch.float32"):
        lstmkit.LSTMCell(I, H)(z(B, I), hx)


# ------------------------------------------------------------------ an empty batch
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=[f"{c}-{k}" for c, k in CONFIGS])
def test_empty_batch_like_torch(cls, kw, engine):
    """(L, 0, H_in) gives empty outputs of torch's shapes; backward gives zero gradients to the
    input, h_0 and every parameter, as torch's does."""
    ours = getattr(lstmkit, cls)(I, 6, **kw, engine=engine)
    theirs = getattr(nn, cls)(I, 6, **kw)
    shape = (0, T, I) if kw.get("batch_first") else (T, 0, I)
    results = []
    for m in (ours, theirs):
        x = torch.zeros(shape, requires_grad=True)
        out, hn = m(x)
        states = hn if isinstance(hn, tuple) else (hn,)
        (out.sum() + sum(s.sum() for s in states)).backward()
        assert x.grad is not None and x.grad.shape == shape
        assert all(p.grad is not None and not p.grad.any() for p in m.parameters())
        results.append([out.shape] + [s.shape for s in states])
    assert results[0] == results[1]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cls", CELLS)
def test_cell_empty_batch_like_torch(cls, engine):
    ours = getattr(lstmkit, cls)(I, H, engine=engine)
    h = torch.zeros(0, H, requires_grad=True)
    hx = (h, torch.zeros(0, H)) if cls == "LSTMCell" else h
    out = ours(torch.zeros(0, I), hx)
    outs = out if isinstance(out, tuple) else (out,)
    assert all(o.shape == (0, H) for o in outs)
    sum(o.sum() for o in outs).backward()
    assert h.grad.shape == (0, H) and not ours.weight_hh.grad.any()


@pytest.mark.parametrize("cls", CELLS)
def test_cell_with_zero_sizes_runs_as_torch(cls):
    """torch's cells take input_size or hidden_size 0; so do lstmkit's."""
    for size_in, size_h in ((0, H), (I, 0)):
        ours, theirs = (getattr(m, cls)(size_in, size_h) for m in (lstmkit, nn))
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(B, size_in)
        torch.testing.assert_close(ours(x), theirs(x))


# ------------------------------------------------------------------ torch.ao quantization
@pytest.fixture
def quantize_dynamic():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # torch.ao.quantization's deprecation notices
        from torch.ao.quantization import quantize_dynamic
        yield quantize_dynamic


class Model(nn.Module):
    def __init__(self, **lstm):
        super().__init__()
        self.rnn = lstmkit.LSTM(8, 16, 2, **lstm)
        self.gru = lstmkit.GRU(8, 16)
        self.cell = lstmkit.LSTMCell(8, 16)
        self.rnn_cell = lstmkit.RNNCell(8, 16)
        self.head = nn.Linear(16, 3)


@pytest.mark.parametrize("spec", [None, {nn.LSTM, nn.GRU, nn.LSTMCell, nn.RNNCell, nn.Linear}],
                         ids=["default-spec", "set"])
def test_quantize_dynamic_converts_standard_layers(quantize_dynamic, spec):
    model = Model().eval()
    quantized = quantize_dynamic(model, spec)
    dynamic = torch.ao.nn.quantized.dynamic
    assert type(quantized.rnn) is dynamic.LSTM and type(quantized.gru) is dynamic.GRU
    assert type(quantized.cell) is dynamic.LSTMCell
    assert type(quantized.rnn_cell) is dynamic.RNNCell
    assert type(model.rnn) is lstmkit.LSTM                       # a copy was quantized
    x = torch.randn(T, B, 8)
    for name in ("rnn", "gru"):
        torch.testing.assert_close(getattr(quantized, name)(x)[0], getattr(model, name)(x)[0],
                                   atol=0.02, rtol=0)
    torch.testing.assert_close(quantized.cell(x[0]), model.cell(x[0]), atol=0.02, rtol=0)


def test_quantize_dynamic_spec_names_only_what_it_names(quantize_dynamic):
    quantized = quantize_dynamic(Model().eval(), {nn.LSTM})
    assert type(quantized.rnn) is torch.ao.nn.quantized.dynamic.LSTM
    assert type(quantized.gru) is lstmkit.GRU and type(quantized.cell) is lstmkit.LSTMCell


def test_quantize_dynamic_linear_only_leaves_layers_alone(quantize_dynamic):
    model = Model(peephole=True).eval()
    quantized = quantize_dynamic(model, {nn.Linear})
    assert type(quantized.head) is torch.ao.nn.quantized.dynamic.Linear
    for name in ("rnn", "gru", "cell", "rnn_cell"):
        assert type(getattr(quantized, name)) is type(getattr(model, name))


@pytest.mark.parametrize("module,says", [
    (lstmkit.LSTM(8, 16, peephole=True), "peephole"),
    (lstmkit.LSTM(8, 16, coupled=True), "coupled"),
    (lstmkit.LSTM(8, 16, proj_size=4), "proj_size"),
    (lstmkit.GRU(8, 16, reset_after=False), "reset_after"),
    (lstmkit.LSTMCell(8, 16, peephole=True), "peephole"),
    (lstmkit.GRUCell(8, 16, reset_after=False), "reset_after"),
], ids=["peephole", "coupled", "proj_size", "gru-reset-before", "cell-peephole",
        "grucell-reset-before"])
def test_quantize_dynamic_refuses_variants(quantize_dynamic, module, says):
    model = nn.Sequential(module)
    with pytest.raises(RuntimeError, match=rf"{type(module).__name__}: torch.ao.quantization "
                       rf"asked to quantize.*no {says}; keep this layer in float"):
        quantize_dynamic(model)
    module.qconfig = None                                        # the way out the error names
    assert type(quantize_dynamic(model)[0]) is type(module)


def test_empty_batch_with_lengths_and_trace():
    m = lstmkit.LSTM(I, H, engine="python")
    out, (h, _) = m(torch.zeros(T, 0, I), lengths=[])
    assert out.shape == (T, 0, H) and h.shape == (1, 0, H)
    with pytest.raises(ValueError, match=r"LSTM: trace needs at least one sequence"):
        m.trace(torch.zeros(T, 0, I))
