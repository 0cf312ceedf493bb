"""Parameter names and shapes, and state_dict round trips with torch.nn modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lstmkit

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")

I, H = 3, 4

CONFIGS = [
    ("LSTM", {}),
    ("LSTM", {"num_layers": 2}),
    ("LSTM", {"bidirectional": True}),
    ("LSTM", {"num_layers": 2, "bidirectional": True}),
    ("LSTM", {"proj_size": 2}),
    ("LSTM", {"proj_size": 3, "num_layers": 2, "bidirectional": True}),
    ("LSTM", {"bias": False}),
    ("LSTM", {"bias": False, "num_layers": 2, "bidirectional": True, "proj_size": 1}),
    ("GRU", {}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
    ("GRU", {"bias": False, "num_layers": 2}),
    ("RNN", {}),
    ("RNN", {"num_layers": 2, "bidirectional": True, "nonlinearity": "relu"}),
    ("RNN", {"bias": False, "num_layers": 3}),
]
IDS = [c + "".join(f"-{k}={v}" for k, v in kw.items()) for c, kw in CONFIGS]


def _modules(cls, kw, engine="auto"):
    ref = getattr(nn, cls)(I, H, **kw)
    ours = getattr(lstmkit, cls)(I, H, engine=engine, **kw)
    return ref, ours


def _assert_same_values(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_keys_and_shapes_identical_to_torch(cls, kw):
    ref, ours = _modules(cls, kw)
    r, o = ref.state_dict(), ours.state_dict()
    assert list(o) == list(r)
    assert {k: tuple(v.shape) for k, v in o.items()} == {k: tuple(v.shape) for k, v in r.items()}
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert all(v.dtype == torch.float32 for v in o.values())


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_round_trip_torch_to_ours_to_torch(cls, kw):
    ref, ours = _modules(cls, kw)
    original = {k: v.clone() for k, v in ref.state_dict().items()}
    result = ours.load_state_dict(ref.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    _assert_same_values(ours.state_dict(), original)
    torch.manual_seed(99)
    back = getattr(nn, cls)(I, H, **kw)
    back.load_state_dict(ours.state_dict())
    _assert_same_values(back.state_dict(), original)
    # and the loaded module computes what torch computes
    x = torch.randn(5, 2, I)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_round_trip_ours_to_torch_to_ours(cls, kw):
    ref, ours = _modules(cls, kw, engine="python")
    original = {k: v.clone() for k, v in ours.state_dict().items()}
    result = ref.load_state_dict(ours.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    _assert_same_values(ref.state_dict(), original)
    back = getattr(lstmkit, cls)(I, H, **kw)
    back.load_state_dict(ref.state_dict())
    _assert_same_values(back.state_dict(), original)
    x = torch.randn(5, 2, I)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-5, rtol=0)


def _names(layers, directions, keys):
    return [f"{k}_l{layer}{sfx}" for layer in range(layers) for sfx in directions for k in keys]


BASE = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
NAMES = [
    (lstmkit.LSTM(I, H), _names(1, [""], BASE)),
    (lstmkit.LSTM(I, H, 2, bidirectional=True), _names(2, ["", "_reverse"], BASE)),
    (lstmkit.LSTM(I, H, proj_size=2), _names(1, [""], [*BASE, "weight_hr"])),
    (lstmkit.LSTM(I, H, 2, bias=False), _names(2, [""], ["weight_ih", "weight_hh"])),
    (lstmkit.LSTM(I, H, peephole=True), _names(1, [""], [*BASE, "weight_ch"])),
    (lstmkit.LSTM(I, H, 2, bidirectional=True, peephole=True, proj_size=2),
     _names(2, ["", "_reverse"], [*BASE, "weight_hr", "weight_ch"])),
    (lstmkit.LSTM(I, H, coupled=True), _names(1, [""], BASE)),
    (lstmkit.GRU(I, H, 2, bidirectional=True, reset_after=False),
     _names(2, ["", "_reverse"], BASE)),
    (lstmkit.RNN(I, H, 3, nonlinearity="relu"), _names(3, [""], BASE)),
]


@pytest.mark.parametrize("module,expected", NAMES, ids=[repr(m) for m, _ in NAMES])
def test_exact_parameter_names(module, expected):
    assert [n for n, _ in module.named_parameters()] == expected
    assert list(module.state_dict()) == expected


@pytest.mark.parametrize("coupled", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_peephole_weight_shapes(coupled, bidirectional):
    m = lstmkit.LSTM(I, H, 2, bidirectional=bidirectional, peephole=True, coupled=coupled)
    G = 3 if coupled else 4
    D = 2 if bidirectional else 1
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    for layer in range(2):
        for sfx in ["", "_reverse"][:D]:
            assert shapes[f"weight_ch_l{layer}{sfx}"] == ((2 if coupled else 3) * H,)
            assert shapes[f"weight_ih_l{layer}{sfx}"] == (G * H, I if layer == 0 else D * H)
            assert shapes[f"weight_hh_l{layer}{sfx}"] == (G * H, H)
            assert shapes[f"bias_ih_l{layer}{sfx}"] == (G * H,)
            assert shapes[f"bias_hh_l{layer}{sfx}"] == (G * H,)
    assert len(shapes) == 2 * D * 5


def test_coupled_lstm_shapes():
    m = lstmkit.LSTM(I, H, 2, coupled=True, proj_size=2)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "weight_ih_l0": (3 * H, I), "weight_hh_l0": (3 * H, 2),
        "bias_ih_l0": (3 * H,), "bias_hh_l0": (3 * H,), "weight_hr_l0": (2, H),
        "weight_ih_l1": (3 * H, 2), "weight_hh_l1": (3 * H, 2),
        "bias_ih_l1": (3 * H,), "bias_hh_l1": (3 * H,), "weight_hr_l1": (2, H),
    }


def test_peephole_lstm_loads_torch_weights_non_strict():
    """A peephole LSTM takes a torch.nn.LSTM's weights; only weight_ch is left missing, and
    with zero peepholes it computes exactly the plain LSTM."""
    ref = nn.LSTM(I, H, 2, dtype=torch.float64)
    ours = lstmkit.LSTM(I, H, 2, peephole=True, dtype=torch.float64)
    result = ours.load_state_dict(ref.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["weight_ch_l0", "weight_ch_l1"]
    assert not result.unexpected_keys
    with pytest.raises(RuntimeError, match="weight_ch_l0"):
        ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        ours.weight_ch_l0.zero_()
        ours.weight_ch_l1.zero_()
    x = torch.randn(4, 2, I, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-12, rtol=0)


CELLS = [
    ("LSTMCell", {}), ("LSTMCell", {"bias": False}), ("GRUCell", {}),
    ("GRUCell", {"bias": False}), ("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("cls,kw", CELLS, ids=[c + "".join(kw) for c, kw in CELLS])
def test_cell_state_dict_round_trip(cls, kw):
    ref = getattr(nn, cls)(I, H, **kw)
    ours = getattr(lstmkit, cls)(I, H, **kw)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [tuple(v.shape) for v in ours.state_dict().values()] == \
        [tuple(v.shape) for v in ref.state_dict().values()]
    original = {k: v.clone() for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict())
    _assert_same_values(ours.state_dict(), original)
    back = getattr(nn, cls)(I, H, **kw)
    back.load_state_dict(ours.state_dict())
    _assert_same_values(back.state_dict(), original)


@pytest.mark.parametrize("coupled", [False, True])
def test_peephole_cell_names_and_shapes(coupled):
    cell = lstmkit.LSTMCell(I, H, peephole=True, coupled=coupled)
    G = 3 if coupled else 4
    assert {k: tuple(v.shape) for k, v in cell.state_dict().items()} == {
        "weight_ih": (G * H, I), "weight_hh": (G * H, H), "bias_ih": (G * H,),
        "bias_hh": (G * H,), "weight_ch": ((2 if coupled else 3) * H,)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_argument_sets_parameter_dtype(dtype):
    for m in (lstmkit.LSTM(I, H, proj_size=2, dtype=dtype), lstmkit.GRU(I, H, dtype=dtype),
              lstmkit.RNN(I, H, dtype=dtype), lstmkit.LSTMCell(I, H, dtype=dtype)):
        assert all(p.dtype == dtype for p in m.parameters())
