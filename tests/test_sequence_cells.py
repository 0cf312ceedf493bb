"""Whole-sequence cells (mLSTM, minGRU, minLSTM) in the registry: the tasks, the CLI, config
defaults, resume, the report and gradflow take them like the per-step cells."""

from __future__ import annotations

import json

import pytest
import torch
from report_runs import page_data
from safetensors.torch import load_file

from lstmkit import minGRU, minLSTM, mLSTM, sLSTM, xLSTM
from lstmkit.cells import registry
from lstmkit.cli import main
from lstmkit.config import defaults_for
from lstmkit.layers import LSTM, make_layer
from lstmkit.tasks.models import final_hidden, final_outputs, make_rnn

SEQUENCE = {"mlstm": (mLSTM, ("C", "n", "m")), "mingru": (minGRU, ("h",)),
            "minlstm": (minLSTM, ("h",)),
            "xlstm": (xLSTM, ("C", "n", "m", "h", "c", "n_s", "m_s"))}


@pytest.mark.parametrize("name", SEQUENCE)
def test_registered_with_their_layer_and_states(name):
    entry = registry.get(name)
    cls, states = SEQUENCE[name]
    assert entry.math is None and entry.sequence_layer is cls
    assert entry.state_names == states
    assert name in registry.names() and name not in registry.step_names()
    assert registry.names()[-len(SEQUENCE):] == ("mingru", "minlstm", "mlstm", "xlstm")
    with pytest.raises(ValueError, match=f"cell '{name}' is a whole-sequence layer"):
        entry.make(4)
    layer = make_layer(name, 3, 4, num_layers=2, dropout=0.1, engine="auto", weight_drop=0.0,
                       input_dropout=0.0, recurrent_dropout=0.0, zoneout=0.0)
    assert type(layer) is cls and layer.num_layers == 2


@pytest.mark.parametrize("key, value", [("weight_drop", 0.3), ("zoneout", 0.1),
                                        ("layer_norm", True), ("proj_size", 2)])
def test_a_keyword_the_layer_does_not_take_is_refused_by_name(key, value):
    with pytest.raises(ValueError, match=rf"cell 'mlstm' \(mLSTM\) does not take {key}="):
        make_layer("mlstm", 3, 4, **{key: value})


def test_engine_goes_to_the_layers_that_have_one():
    assert make_layer("mlstm", 3, 4, engine="python").engine == "python"
    assert {m.engine for m in make_layer("xlstm", 3, 4, engine="python").layers} == {"python"}
    with pytest.raises(ValueError, match="engine should be one of"):
        make_layer("mlstm", 3, 4, engine="torch")
    assert make_layer("mingru", 3, 4, engine="python").engine == "python"
    with pytest.raises(ValueError, match="engine should be one of"):
        make_layer("minlstm", 3, 4, engine="torch")


def test_register_refuses_a_layer_without_path_or_states():
    with pytest.raises(ValueError, match="give layer='module:Class'"):
        registry.register("toy-seq", layer="lstmkit.layers.mlstm", states=("C",))
    with pytest.raises(ValueError, match="give layer='module:Class'"):
        registry.register("toy-seq", layer="lstmkit.layers.mlstm:mLSTM")
    with pytest.raises(ValueError, match="registered already"):
        registry.register("mlstm", layer="lstmkit.layers.minrnn:minGRU", states=("h",))
    assert "toy-seq" not in registry.names()


def test_task_defaults_drop_the_regularisers_a_layer_does_not_take():
    lstm, mlstm = defaults_for("names", "lstm"), defaults_for("names", "mlstm")
    assert lstm.weight_drop > 0 and lstm.input_dropout > 0        # the names defaults
    assert (mlstm.cell, mlstm.weight_drop, mlstm.input_dropout) == ("mlstm", 0.0, 0.0)
    assert mlstm.dropout == lstm.dropout and mlstm.hidden == lstm.hidden
    assert defaults_for("names", "slstm").weight_drop == lstm.weight_drop   # Recurrent takes it


def test_the_chars_layer_norm_default_is_kept_where_a_layernorm_form_exists():
    """chars defaults to the LayerNorm LSTM; a cell without a LayerNorm form trains plain, and
    every registered cell can be trained with the chars defaults (the layer is made)."""
    assert defaults_for("chars").layer_norm
    keep = {name for name in registry.names() if defaults_for("chars", name).layer_norm}
    assert keep == {"lstm", "gru"}
    for name in registry.names():
        cfg = defaults_for("chars", name)
        make_rnn(name, 3, 4, 1, 0.0, False, "auto", cfg.rnn_options())


def test_asked_for_by_name_layer_norm_is_refused_for_a_cell_without_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "chars", "--out", str(tmp_path / "r"), "--cell", "peephole",
              "--layer-norm", "--max-steps", "1"])
    assert "layer_norm is for the cells lstm and gru, got 'peephole'" in capsys.readouterr().err


def test_asked_for_by_name_a_regulariser_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "names", "--out", str(tmp_path / "r"), "--cell", "mingru",
              "--weight-drop", "0.2", "--max-steps", "1"])
    assert "cell 'mingru' (minGRU) does not take weight_drop=0.2" in capsys.readouterr().err


def test_final_outputs_read_the_final_hidden_state_of_a_padded_batch():
    torch.manual_seed(0)
    layer = LSTM(3, 5, num_layers=2, bidirectional=True)
    lengths = torch.tensor([6, 4, 1])
    x = torch.randn(6, 3, 3)
    out, (h_n, _) = layer(x, lengths=lengths)
    torch.testing.assert_close(final_outputs(out, lengths, 2), final_hidden(h_n, 2, 2))


def _chars(tmp_path, out, *extra):
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 30)
    main(["train", "chars", "--out", str(out), "--path", str(text), "--embed", "8", "--bptt",
          "10", "--batch-size", "4", "--hidden", "8", "--layers", "2", "--threads", "1",
          "--cell", "mlstm", "--checkpoint-every", "5", *extra])


def test_mlstm_chars_run_resumes_mid_epoch_with_its_matrix_state(tmp_path):
    """The carried (C, n, m) is saved and checked by shape; a run stopped at a step checkpoint
    and resumed ends with the weights of one never stopped."""
    full, part = tmp_path / "full", tmp_path / "part"
    _chars(tmp_path, full, "--epochs", "1")
    _chars(tmp_path, part, "--epochs", "1", "--max-steps", "10")
    latest = json.loads((part / "checkpoint" / "latest.json").read_text())
    saved = load_file(part / "checkpoint" / f"{latest['name']}.safetensors")
    carry = [saved[k] for k in sorted(saved) if k.startswith("carry.")]
    assert [tuple(t.shape) for t in carry] == [(2, 4, 1, 8, 8), (2, 4, 1, 8), (2, 4, 1)]
    _chars(tmp_path, part, "--epochs", "1", "--resume", "--max-steps", "0")
    a, b = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    views = page_data(full / "report.html")["inside"]["views"]          # the mLSTM traced
    assert [v["title"] for v in views] == ["layer 1", "layer 2"]
    assert set(views[0]["grad"]) == {"h", "C", "n"}


def test_gradflow_takes_every_cell_and_names_the_stack(tmp_path, capsys):
    main(["gradflow", "--cells", "lstm,slstm,mlstm,mingru", "--length", "6", "--hidden", "4",
          "--train-steps", "0", "--out", str(tmp_path)])
    table = (tmp_path / "gradflow.md").read_text()
    for row in ("| slstm | mean norm dL/dh_{T-k}", "| mlstm | mean norm dL/dC_{T-k}",
                "| mingru | mean spectral norm dh_T/dh_{T-k}"):
        assert row in table
    assert (tmp_path / "gradflow.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["gradflow", "--cells", "lstm,xlstm", "--out", str(tmp_path)])
    assert "--cells: xlstm is a stack of mLSTM and sLSTM layers" in capsys.readouterr().err


def test_xlstm_stack_mixes_the_layers_and_carries_its_state():
    torch.manual_seed(1)
    stack = xLSTM(3, 4, num_layers=3, num_heads=2, bidirectional=True, dtype=torch.float64)
    assert [type(m) for m in stack.layers] == [mLSTM, sLSTM, mLSTM]
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    out, state = stack(x)
    assert out.shape == (6, 2, 8)
    assert [tuple(t.shape) for t in state] == stack.state_shapes(2) == \
        [(4, 2, 2, 2, 2), (4, 2, 2, 2), (4, 2, 2), *[(2, 2, 4)] * 4]
    # one layer after another by hand, each state where the stack's says it is
    h, parts = x, []
    for layer in stack.layers:
        h, s = layer(h)
        parts.append(s)
    torch.testing.assert_close(out, h)
    torch.testing.assert_close(state[0], torch.cat([parts[0][0], parts[2][0]]))
    torch.testing.assert_close(state[3], parts[1][0])
    # a unidirectional stack run in two chunks with the state carried equals one call
    uni = xLSTM(3, 4, num_layers=2, dtype=torch.float64)
    out, state = uni(x)
    a, s = uni(x[:2])
    b, s = uni(x[2:], s)
    torch.testing.assert_close(torch.cat([a, b]), out)
    for u, v in zip(s, state):
        torch.testing.assert_close(u, v)


def test_xlstm_stack_gradchecks():
    torch.manual_seed(2)
    stack = xLSTM(2, 4, num_layers=2, num_heads=2, dtype=torch.float64)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in stack.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in stack.parameters()]
    assert torch.autograd.gradcheck(
        lambda x, *w: torch.func.functional_call(stack, dict(zip(names, w)), (x,))[0],
        (x, *leaves), fast_mode=True)


@pytest.mark.parametrize("kwargs, match", [
    ({"slstm_at": (2,)}, "slstm_at must name distinct layers in 0..1"),
    ({"slstm_at": (1, 1)}, "slstm_at must name distinct layers"),
    ({"num_layers": 0}, "num_layers must be a positive int"),
    ({"num_heads": 3}, "num_heads")])
def test_xlstm_stack_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        xLSTM(3, 4, **{"num_layers": 2, **kwargs})
    with pytest.raises(ValueError, match="seven tensors"):
        xLSTM(3, 4)(torch.randn(2, 1, 3), (torch.zeros(1),))


def test_heads_option_reaches_the_layer_and_is_checked(tmp_path, capsys):
    cfg = defaults_for("chars", "xlstm")
    assert "num_heads" not in cfg.rnn_options()
    text = tmp_path / "text.txt"
    text.write_text("abcd efgh\n" * 40)
    run = tmp_path / "r"
    main(["train", "chars", "--out", str(run), "--path", str(text), "--embed", "4", "--bptt",
          "8", "--batch-size", "2", "--hidden", "8", "--heads", "4", "--cell", "slstm",
          "--epochs", "1", "--max-steps", "2", "--threads", "1"])
    assert json.loads((run / "config.json").read_text())["heads"] == 4
    from lstmkit.cli import load_run
    assert load_run(run)[2].rnn.cell.num_heads == 4
    for cell, hidden, message in (("lstm", 8, "--heads must be 1 for cell 'lstm'"),
                                  ("mlstm", 6, "--heads must be a divisor of --hidden 6")):
        with pytest.raises(SystemExit):
            main(["train", "chars", "--out", str(tmp_path / cell), "--path", str(text),
                  "--cell", cell, "--hidden", str(hidden), "--heads", "4"])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", SEQUENCE)
def test_state_returned_under_bfloat16_autocast_is_taken_back(name):
    """A language model carries the state between batches; under autocast the state comes back
    in bfloat16 and the next call (float32 input) must take it."""
    from lstmkit.tasks.models import LanguageModel

    torch.manual_seed(3)
    model = LanguageModel(11, name, 4, 8, 2)
    tokens = torch.randint(0, 11, (5, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, state = model(tokens, None, tokens)
        loss2, _ = model(tokens, state, tokens)
    assert torch.isfinite(loss) and torch.isfinite(loss2)


TRANSFORMED = {
    "mingru": lambda: minGRU(3, 4, num_layers=2, dtype=torch.float64),
    "minlstm": lambda: minLSTM(3, 4, bidirectional=True, dtype=torch.float64),
    "mlstm": lambda: mLSTM(3, 4, num_heads=2, dtype=torch.float64),
    "mlstm-chunkwise": lambda: mLSTM(3, 4, num_heads=2, mode="chunkwise", chunk_size=2,
                                     dtype=torch.float64),
    "xlstm": lambda: xLSTM(3, 4, num_layers=2, num_heads=2, dtype=torch.float64),
}


@pytest.mark.parametrize("name", TRANSFORMED)
def test_torch_func_transforms_give_the_layers_numbers(name):
    """vmap and grad run the whole-sequence layers (their hand-written backward cannot run
    under torch.func; the plain loops of torch ops do): equal to a loop over the batches and
    to backward."""
    from torch.func import grad, vmap

    torch.manual_seed(0)
    layer = TRANSFORMED[name]()
    xs = torch.randn(3, 5, 2, 3, dtype=torch.float64)           # 3 independent (T, B, I)
    expected = torch.stack([layer(x)[0] for x in xs])
    torch.testing.assert_close(vmap(lambda x: layer(x)[0])(xs), expected)
    with torch.no_grad():                                       # the compiled steps' path
        torch.testing.assert_close(vmap(lambda x: layer(x)[0])(xs), expected)
    x = xs[0].clone().requires_grad_()
    layer(x)[0].square().sum().backward()
    torch.testing.assert_close(grad(lambda x: layer(x)[0].square().sum())(xs[0]), x.grad)
