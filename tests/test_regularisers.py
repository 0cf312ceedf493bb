"""weight_drop (DropConnect on W_hh, one mask per call) and input_dropout (one mask per sequence
on each layer's input, the same at every step): the layer equals the plain layer run on the
masked weights and inputs, on every engine that runs them; gradients only through what was kept;
off in eval; bad values named."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import lstmkit
from lstmkit import GRU, LSTM, RNN

I, H, T, B = 3, 4, 6, 2
DT = torch.float64


def _layers():
    return [LSTM(I, H, 2, dtype=DT, peephole=True), GRU(I, H, 2, dtype=DT, bidirectional=True),
            RNN(I, H, dtype=DT), LSTM(I, H, dtype=DT, proj_size=2)]


def _plain_on_masks(layer, x, masks):
    """The same layer with no regulariser, its W_hh replaced by W_hh * mask, each layer's
    input multiplied by its mask: what a regularised training call must compute."""
    plain = copy.deepcopy(layer)
    plain.weight_drop = plain.input_dropout = 0.0
    with torch.no_grad():
        for k, names in enumerate(plain._param_names):
            if "weight_hh" in masks:
                getattr(plain, names["weight_hh"]).mul_(masks["weight_hh"][k])
    if "input" not in masks:
        return plain(x)
    # input masks: run layer by layer (the masks differ per layer)
    out, finals = x, []
    for k in range(plain.num_layers):
        one = _single_layer(plain, k)
        out, h = one(out * masks["input"][k])
        finals.append(h)
    if isinstance(finals[0], tuple):
        return out, tuple(torch.cat([f[i] for f in finals]) for i in range(2))
    return out, torch.cat(finals)


def _single_layer(layer, k):
    kw = {"bidirectional": layer.bidirectional, "dtype": DT, "engine": "python"}
    if layer.family == "lstm":
        kw.update(peephole=layer.peephole, proj_size=layer.proj_size)
    if layer.family == "gru":
        kw.update(reset_after=layer.reset_after)
    D, P = layer.num_directions, layer.proj_size or layer.hidden_size
    one = type(layer)(I if k == 0 else P * D, layer.hidden_size, **kw)
    suffix = f"_l{k}"
    one.load_state_dict({name.replace(suffix, "_l0"): value
                         for name, value in layer.state_dict().items()
                         if f"{suffix}" in name and (name.endswith(suffix)
                                                     or name.endswith(suffix + "_reverse"))})
    return one


def _flat(result):
    out, hidden = result
    return [out, *(hidden if isinstance(hidden, tuple) else (hidden,))]


@pytest.mark.parametrize("engine", ["python", "compiled"])
@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("which", ["weight_drop", "input_dropout", "both"])
def test_a_training_call_equals_the_plain_layer_on_its_masks(engine, index, which):
    torch.manual_seed(index)
    layer = _layers()[index]
    layer.engine = engine
    if which in ("weight_drop", "both"):
        layer.weight_drop = 0.4
    if which in ("input_dropout", "both"):
        layer.input_dropout = 0.3
    x = torch.randn(T, B, I, dtype=DT)
    trace = layer.trace(x)                         # training mode: masks drawn and recorded
    masks = trace.masks
    assert ("weight_hh" in masks) == (which != "input_dropout")
    assert ("input" in masks) == (which != "weight_drop")
    for m in masks.get("weight_hh", []):           # kept entries scaled by 1 / (1 - p)
        assert set(m.unique().tolist()) <= {0.0, 1 / 0.6}
    for m in masks.get("input", []):               # one mask per sequence: (N, features)
        assert m.shape[0] == B and set(m.unique().tolist()) <= {0.0, 1 / 0.7}
    expected = _plain_on_masks(layer, x, masks)
    for got, want in zip([trace.output, trace.h_n] + ([trace.c_n] if trace.c_n is not None
                                                      else []), _flat(expected)):
        torch.testing.assert_close(got, want)


def test_masks_differ_between_calls_and_are_off_in_eval():
    torch.manual_seed(0)
    layer = LSTM(I, H, dtype=DT, weight_drop=0.5, input_dropout=0.5)
    x = torch.randn(T, B, I, dtype=DT)
    a, b = layer.trace(x).masks, layer.trace(x).masks
    assert not torch.equal(a["weight_hh"][0], b["weight_hh"][0])
    plain = copy.deepcopy(layer)
    plain.weight_drop = plain.input_dropout = 0.0
    layer.eval()
    torch.testing.assert_close(layer(x)[0], plain(x)[0])
    assert layer.trace(x).masks == {}


@pytest.mark.parametrize("engine", ["python", "compiled"])
def test_gradcheck_with_the_masks_fixed_by_a_seed(engine):
    torch.manual_seed(1)
    layer = LSTM(I, H, dtype=DT, weight_drop=0.3, input_dropout=0.3, coupled=True,
                 engine=engine)
    names = [n for n, _ in layer.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(4, B, I, dtype=DT, requires_grad=True)

    def run(x, *weights):
        torch.manual_seed(7)                       # the same masks at every evaluation
        return torch.func.functional_call(layer, dict(zip(names, weights)), (x,))[0]

    assert torch.autograd.gradcheck(run, (x, *leaves))


def test_gradients_reach_only_the_kept_recurrent_weights():
    torch.manual_seed(2)
    layer = GRU(I, H, dtype=DT, weight_drop=0.5)
    trace = layer.trace(torch.randn(T, B, I, dtype=DT))
    trace.output.sum().backward()
    dropped = trace.masks["weight_hh"][0] == 0
    assert dropped.any() and (layer.weight_hh_l0.grad[dropped] == 0).all()
    assert (layer.weight_hh_l0.grad[~dropped] != 0).any()


def test_bad_values_are_named():
    with pytest.raises(ValueError, match=r"weight_drop must be in \[0, 1\), got 1"):
        LSTM(I, H, weight_drop=1.0)
    with pytest.raises(ValueError, match=r"input_dropout must be in \[0, 1\), got -0.1"):
        GRU(I, H, input_dropout=-0.1)
    with pytest.raises(TypeError, match="weight_drop should be a number"):
        RNN(I, H, weight_drop="0.5")
    with pytest.raises(ValueError, match="engine='torch'.*no weight drop"):
        LSTM(I, H, weight_drop=0.2, engine="torch")
    assert "weight_drop=0.2" in repr(LSTM(I, H, weight_drop=0.2))
    assert repr(lstmkit.LSTM(I, H)) == "LSTM(3, 4)"


def test_the_cli_takes_them_and_saves_them(tmp_path):
    from lstmkit.cli import main

    run = tmp_path / "run"
    main(["train", "adding", "--out", str(run), "--length", "8", "--epochs", "1",
          "--steps-per-epoch", "3", "--hidden", "8", "--weight-drop", "0.3",
          "--input-dropout", "0.2"])
    config = json.loads((run / "config.json").read_text())
    assert config["weight_drop"] == 0.3 and config["input_dropout"] == 0.2
    from lstmkit.cli import load_run
    _, _, model = load_run(str(run))
    assert model.rnn.weight_drop == 0.3 and model.rnn.input_dropout == 0.2
