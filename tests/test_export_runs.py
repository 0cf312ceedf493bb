"""`lstmkit export RUN`: every task's run as model.onnx + model.json, through the real command;
the README's onnxruntime examples, run exactly as printed without torch or lstmkit; bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from test_cli import DATA, lstmkit, tiny_ptb

from lstmkit.cells import registry

README = Path(__file__).resolve().parent.parent / "README.md"
has_data = bool(DATA) and Path(DATA or ".", "names").is_dir()
# task -> training options: tiny, a few seconds each
TRAIN = {
    "names": ["--train-size", 300, "--epochs", 2, "--hidden", 16, "--embed", 8,
              "--batch-size", 32],
    "names-streaming": ["--train-size", 300, "--epochs", 1, "--hidden", 16, "--embed", 8,
                        "--layers", 1, "--no-bidirectional", "--cell", "gru-cho"],
    "ptb": ["--epochs", 1, "--hidden", 16, "--embed", 16, "--bptt", 10, "--batch-size", 8,
            "--cell", "coupled"],
    "chars": ["--epochs", 1, "--hidden", 16, "--embed", 8, "--bptt", 20, "--batch-size", 4],
    "forecast": ["--epochs", 5, "--hidden", 8],
    "adding": ["--length", 12, "--epochs", 1, "--steps-per-epoch", 10, "--hidden", 8,
               "--cell", "rnn"],
    "copy": ["--length", 5, "--epochs", 1, "--steps-per-epoch", 10, "--hidden", 8,
             "--cell", "peephole"],
    "jsb": ["--epochs", 1, "--max-steps", 2, "--hidden", 8, "--cell", "gru"],
}
NEEDS_DATA = {"names", "names-streaming", "ptb", "forecast", "jsb"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders of every task that can train here (the data tasks need LSTMKIT_DATA)."""
    root = tmp_path_factory.mktemp("runs")
    (root / "text.txt").write_text("ROMEO: To be, or not to be, that is the question.\n" * 40)
    made = {}
    for key, options in TRAIN.items():
        if key in NEEDS_DATA and not has_data:
            continue
        task = key.split("-")[0]
        extra = []
        if task == "ptb":
            extra = ["--path", tiny_ptb(root / "ptb-corpus", lines=200)]
        elif task == "chars":
            extra = ["--path", root / "text.txt"]
        lstmkit("train", task, "--out", root / key, *options, *extra)
        made[key] = root / key
    return made


def _run(runs, key):
    if key not in runs:
        pytest.skip(f"needs LSTMKIT_DATA with the shared data sets ({key})")
    return runs[key]


@pytest.mark.parametrize("key", sorted(TRAIN))
def test_every_task_exports(runs, key):
    run = _run(runs, key)
    out = lstmkit("export", run, *(["--streaming"] if key.endswith("streaming") else []))
    assert "onnxruntime matches the run's model to" in out.stdout
    meta = json.loads((run / "model.json").read_text())
    config = json.loads((run / "config.json").read_text())
    task = config["task"]
    assert meta["format"] == "lstmkit-onnx" and meta["task"] == task
    assert meta["max_abs_diff_vs_torch"] <= 1e-5
    graph = onnx.load(run / "model.onnx").graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    assert inputs == [i["name"] for i in meta["inputs"]]
    assert outputs == [o["name"] for o in meta["outputs"]]
    assert all(i["meaning"] for i in meta["inputs"] + meta["outputs"])
    streams = task in ("ptb", "chars") or key.endswith("streaming")
    states = registry.get(config["cell"]).state_names
    assert inputs[-len(states):] == ([f"initial_{s}" for s in states] if streams
                                     else inputs[-len(states):])
    assert any(n.endswith(f"Y_{states[-1]}") for n in outputs) == streams
    # ONNX has no LayerNorm LSTM operator: such a layer is a Scan over its step (chars default)
    op = ("Scan" if config["layer_norm"] else
          {"gru": "GRU", "gru-cho": "GRU", "rnn": "RNN"}.get(config["cell"], "LSTM"))
    assert op in {n.op_type for n in graph.node}
    if task == "names":
        assert meta["classes"] == config["meta"]["languages"] and meta["alphabet"]
    if task in ("ptb", "chars"):
        assert meta["vocab"] == config["meta"]["vocab"]
    if task == "forecast":
        assert meta["transform"] == config["meta"]["transform"] and meta["window"] > 0


@pytest.mark.parametrize("key", ["names", "ptb", "jsb"])
def test_int8_reports_test_metrics_of_both(runs, key, tmp_path):
    run = _run(runs, key)
    out = tmp_path / "int8.onnx"
    text = lstmkit("export", run, "--int8", "--out", out).stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    ev = meta["evaluation"]
    assert meta["precision"] == "int8" and ev["split"] == "test"
    assert meta["size_bytes"]["int8"] < meta["size_bytes"]["float32"]
    ops = {n.op_type for n in onnx.load(out).graph.node}
    if key == "jsb":                                        # a GRU: no int8 operator, said so
        assert "GRU" in ops and "GRU" in meta["int8_note"] and "note: " in text
    else:
        assert "DynamicQuantizeLSTM" in ops and "int8_note" not in meta   # the LSTM runs int8
    results = json.loads((run / "results.json").read_text())["test"]
    # float32 through onnxruntime scores what lstmkit scored at the end of training
    assert ev["float32"]["loss"] == pytest.approx(results["loss"], abs=1e-4)
    assert abs(ev["int8"]["loss"] - ev["float32"]["loss"]) < 0.05 * ev["float32"]["loss"]
    assert "float32" in text and "int8" in text


def _example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", README.read_text(),
                      re.S)
    assert match, f"README has no example {name}"
    return match.group(1)


def _run_without_torch(code: str, cwd: Path) -> str:
    """code in a fresh Python in which importing torch or lstmkit fails."""
    blocker = "import sys\nsys.modules['torch'] = sys.modules['lstmkit'] = None\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", blocker + code], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _plain_folder(tmp_path, runs, key) -> Path:
    run = _run(runs, key)
    if not (run / "model.onnx").exists() or \
            json.loads((run / "model.json").read_text())["precision"] != "float32":
        lstmkit("export", run)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / key).symlink_to(run)
    return tmp_path


def test_readme_names_example(runs, tmp_path):
    cwd = _plain_folder(tmp_path, runs, "names")
    out = _run_without_torch(_example("onnx-names"), cwd).split()
    expected = lstmkit("predict", runs["names"], "Dostoevsky", "--top", "1").stdout.split()
    assert out[0] == "Dostoevsky" and out[1] == expected[1]
    assert float(out[2]) == pytest.approx(float(expected[2]), abs=2e-3)


def test_readme_chars_example(runs, tmp_path):
    cwd = _plain_folder(tmp_path, runs, "chars")
    text = _run_without_torch(_example("onnx-chars"), cwd)[:-1]
    vocab = json.loads((runs["chars"] / "model.json").read_text())["vocab"]
    assert text.startswith("ROMEO:") and len(text) == 206 and set(text[6:]) <= set(vocab)


def test_readme_forecast_example(runs, tmp_path):
    cwd = _plain_folder(tmp_path, runs, "forecast")
    shutil.copy(Path(DATA, "airline_passengers", "airline-passengers.csv"), cwd)
    got = [float(v) for v in re.findall(r"[-0-9.]+", _run_without_torch(
        _example("onnx-forecast"), cwd))]
    printed = lstmkit("forecast", runs["forecast"], "--horizon", "12", "--out",
                      tmp_path / "f.png").stdout
    expected = [float(v) for v in re.findall(r"^\+\d+ [0-9-]+: ([-0-9.]+)", printed, re.M)]
    assert len(got) == len(expected) == 12
    assert got == pytest.approx(expected, abs=1.0)           # the example rounds to units


# ------------------------------------------------------------------ bad input
def _one_line_error(result, *phrases):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstmkit: error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def _no_leftovers(folder: Path, before: set[str]):
    assert {p.name for p in folder.iterdir()} == before


def test_bad_run_folders_and_outputs(runs, tmp_path):
    run = _run(runs, "chars")
    _one_line_error(lstmkit("export", tmp_path / "nowhere", check=False), "is not a folder")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(run / "config.json", partial)
    _one_line_error(lstmkit("export", partial, check=False), "model.safetensors")
    _no_leftovers(partial, {"config.json"})
    other = tmp_path / "other-version"
    shutil.copytree(run, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "schema_of_tomorrow": 3}))
    _one_line_error(lstmkit("export", other, check=False), "unknown fields")

    before = {p.name for p in run.iterdir()}
    _one_line_error(lstmkit("export", run, "--out", tmp_path / "model.pt", check=False),
                    "unknown format '.pt'")
    _one_line_error(lstmkit("export", run, "--out", tmp_path / "no" / "such" / "m.onnx",
                            check=False), "is not a folder")
    _one_line_error(lstmkit("export", run, "--out", run / "config.json" / "m.onnx",
                            check=False), "is not a folder")
    _no_leftovers(run, before)
    assert not list(tmp_path.glob("*.onnx*"))


def test_streaming_a_bidirectional_run_is_refused(runs):
    run = _run(runs, "names")
    assert json.loads((run / "config.json").read_text())["bidirectional"]
    before = {p.name for p in run.iterdir()}
    _one_line_error(lstmkit("export", run, "--streaming", "--out", run / "s.onnx", check=False),
                    "--streaming needs a unidirectional model")
    _no_leftovers(run, before)


def test_without_the_onnx_extra_the_error_says_how_to_install(runs, tmp_path):
    run = _run(runs, "chars")
    code = ("import sys\nsys.modules['onnxscript'] = None\nfrom lstmkit.cli import main\n"
            f"main(['export', {str(run)!r}, '--out', {str(tmp_path / 'm.onnx')!r}])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    _one_line_error(result, "needs the onnx extra", "pip install 'lstmkit[onnx]'")
    assert not list(tmp_path.iterdir())
