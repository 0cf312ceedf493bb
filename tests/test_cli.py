"""Each task end to end through the real `lstmkit` command in a subprocess, on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

DATA = os.environ.get("LSTMKIT_DATA")
needs_data = pytest.mark.skipif(not DATA or not Path(DATA, "names").is_dir(),
                                reason="needs LSTMKIT_DATA with the shared data sets")
RUN_FILES = {"config.json", "metrics.jsonl", "model.safetensors", "results.json", "loss.png",
             "checkpoint"}


def lstmkit(*args, check=True, env=None):
    result = subprocess.run([sys.executable, "-m", "lstmkit", *map(str, args)],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"lstmkit {' '.join(map(str, args))} exited "
                             f"{result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def valid_losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["valid"]["loss"] for r in records if "valid" in r]


def assert_run_folder(run: Path, extra=()):
    names = {p.name for p in run.iterdir()}
    assert RUN_FILES | set(extra) <= names, names
    latest = json.loads((run / "checkpoint" / "latest.json").read_text())
    assert (run / "checkpoint" / f"{latest['name']}.safetensors").is_file()
    results = json.loads((run / "results.json").read_text())
    assert {"valid", "test", "train_seconds", "steps"} <= set(results)


@needs_data
def test_names_end_to_end(tmp_path):
    run = tmp_path / "names"
    lstmkit("train", "names", "--out", run, "--train-size", 400, "--epochs", 4, "--hidden", 32,
            "--layers", 1, "--batch-size", 32, "--lr", 0.01)
    assert_run_folder(run, extra={"confusion.png"})
    losses = valid_losses(run)
    assert losses[-1] < losses[0]
    out = lstmkit("predict", run, "Dostoevsky", "Nguyen", "--top", 2).stdout.splitlines()
    assert len(out) == 2 and out[0].startswith("Dostoevsky: ")
    languages = json.loads((run / "config.json").read_text())["meta"]["languages"]
    ranked = out[0].split(": ", 1)[1].split(", ")
    assert len(ranked) == 2 and all(r.split()[0] in languages for r in ranked)
    probs = [float(r.split()[1]) for r in ranked]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert "test:" in lstmkit("evaluate", run).stdout


@needs_data
def test_names_disjoint_weighted_saved_and_resumed(tmp_path):
    """--split and --class-weight are saved in config.json, read back by evaluate and kept by
    --resume (which may not change them)."""
    run = tmp_path / "names"
    common = ("--train-size", 200, "--hidden", 16, "--layers", 1, "--no-bidirectional",
              "--split", "disjoint", "--class-weight", 0.5)
    lstmkit("train", "names", "--out", run, "--epochs", 1, *common)
    config = json.loads((run / "config.json").read_text())
    assert (config["split"], config["class_weight"]) == ("disjoint", 0.5)
    assert "test:" in lstmkit("evaluate", run).stdout
    lstmkit("train", "names", "--out", run, "--epochs", 2, "--resume", *common)
    assert len(valid_losses(run)) == 2
    assert_clear_error(lstmkit("train", "names", "--out", run, "--epochs", 3, "--resume",
                               "--split", "standard", check=False), "cannot change --split")


def tiny_ptb(folder: Path, lines: int = 300) -> Path:
    """The first lines of real PTB as train; valid and test drawn from those lines."""
    source = Path(DATA, "ptb", "ptb.train.txt").read_text().splitlines()[:lines]
    folder.mkdir()
    (folder / "ptb.train.txt").write_text("\n".join(source) + "\n")
    (folder / "ptb.valid.txt").write_text("\n".join(source[:30]) + "\n")
    (folder / "ptb.test.txt").write_text("\n".join(source[30:60]) + "\n")
    return folder


@needs_data
def test_ptb_end_to_end(tmp_path):
    run = tmp_path / "ptb"
    lstmkit("train", "ptb", "--out", run, "--path", tiny_ptb(tmp_path / "corpus"),
            "--epochs", 3, "--hidden", 32, "--embed", 32, "--bptt", 10, "--batch-size", 8,
            "--lr", 0.2,
            "--decay-after", 2)
    assert_run_folder(run)
    losses = valid_losses(run)
    assert losses[-1] < losses[0]
    text = lstmkit("sample", run, "--prime", "the company", "--length", 20).stdout
    assert text.startswith("the company") and len(text.split()) >= 10


def _chars_stopped_and_resumed(tmp_path, lines: int, stop: int, end: int, *options):
    """A chars run of `end` epochs, and one stopped after `stop` then resumed to `end`: both
    end with the same weights. Returns the two run folders (uninterrupted, resumed)."""
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * lines)
    common = ["--path", text, "--embed", 8, "--bptt", 20, "--batch-size", 4, "--lr", 0.01,
              *options]
    full, part = tmp_path / "full", tmp_path / "part"
    lstmkit("train", "chars", "--out", full, "--epochs", end, *common)
    lstmkit("train", "chars", "--out", part, "--epochs", stop, *common)
    lstmkit("train", "chars", "--out", part, "--epochs", end, "--resume", *common)
    a, b = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    return full, part


def test_chars_end_to_end_and_resume_matches(tmp_path):
    # stopped after two epochs, then resumed: the same weights and results
    full, part = _chars_stopped_and_resumed(tmp_path, 60, 2, 4, "--hidden", 24, "--layers", 1,
                                            "--dropout", 0)
    assert_run_folder(full)
    losses = valid_losses(full)
    assert losses[-1] < losses[0]
    assert lstmkit("sample", full, "--prime", "To be", "--length", 30).stdout.startswith("To be")
    results = [json.loads((r / "results.json").read_text()) for r in (full, part)]
    assert results[0]["test"] == results[1]["test"]


def test_resume_with_dropout_matches(tmp_path):
    """Dropout masks come from torch's generator, which the checkpoint keeps: a run stopped
    after an epoch and resumed ends with the same weights as one never stopped."""
    _chars_stopped_and_resumed(tmp_path, 40, 1, 2, "--hidden", 16, "--layers", 2,
                               "--dropout", 0.3)


def test_tied_weights_save_resume_and_load(tmp_path):
    """--tie: the decoder is the embedding; the run's files hold both names (safetensors refuses
    shared memory), a resumed run ends where an uninterrupted one does, and the tie survives
    loading (sample reads the model back)."""
    full, part = _chars_stopped_and_resumed(tmp_path, 40, 1, 2, "--hidden", 8, "--layers", 1,
                                            "--tie")
    tensors = load_file(full / "model.safetensors")
    assert (tensors["decoder.weight"] == tensors["embed.weight"]).all()
    assert lstmkit("sample", part, "--prime", "To", "--length", 5).stdout.startswith("To")


def test_resume_inside_an_epoch_continues_the_same_trajectory(tmp_path):
    """A run stopped mid-epoch at a step checkpoint continues exactly as if never stopped."""
    common = ["--length", 12, "--hidden", 16, "--steps-per-epoch", 10, "--batch-size", 16,
              "--epochs", 3, "--checkpoint-every", 5, "--dropout", 0]
    full, part = tmp_path / "full", tmp_path / "part"
    lstmkit("train", "adding", "--out", full, *common)
    lstmkit("train", "adding", "--out", part, "--max-steps", 15, *common)
    lstmkit("train", "adding", "--out", part, "--resume", "--max-steps", 0, *common)

    def final_weights(run):
        latest = json.loads((run / "checkpoint" / "latest.json").read_text())["name"]
        tensors = load_file(run / "checkpoint" / f"{latest}.safetensors")
        return {k: v for k, v in tensors.items() if k.startswith("model.")}

    a, b = final_weights(full), final_weights(part)
    assert a.keys() == b.keys() and all(((a[k] - b[k]).abs() < 1e-7).all() for k in a)


@needs_data
def test_forecast_end_to_end(tmp_path):
    run = tmp_path / "air"
    lstmkit("train", "forecast", "--out", run, "--epochs", 15, "--hidden", 8, "--patience", 0)
    assert_run_folder(run, extra={"forecast.png"})
    results = json.loads((run / "results.json").read_text())
    assert {"mape", "mape_seasonal_naive", "mape_linear_trend"} <= set(results["test"])
    out = lstmkit("forecast", run, "--horizon", 6, "--out", tmp_path / "ahead.png").stdout
    lines = [line for line in out.splitlines() if line.startswith("+")]
    assert len(lines) == 6 and (tmp_path / "ahead.png").stat().st_size > 1000


def test_copy_runs_and_learns(tmp_path):
    from lstmkit.data.synthetic import copy_task_baseline

    run = tmp_path / "copy"
    lstmkit("train", "copy", "--out", run, "--length", 5, "--hidden", 16, "--epochs", 2,
            "--steps-per-epoch", 5, "--batch-size", 8)
    assert_run_folder(run)
    losses = valid_losses(run)
    assert len(losses) == 2 and losses[1] < losses[0]       # it learns: the loss falls
    test = json.loads((run / "results.json").read_text())["test"]
    assert 0 <= test["accuracy"] <= 1
    assert test["baseline_loss"] == pytest.approx(copy_task_baseline(5))


# ---------------------------------------------------------------------- errors: one line, exit 2
def assert_clear_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_option_is_one_line(tmp_path):
    assert_clear_error(lstmkit("train", "adding", "--out", tmp_path / "r", "--hiden", 3,
                               check=False), "unrecognized arguments: --hiden")


def test_bad_values_are_one_line(tmp_path):
    assert_clear_error(lstmkit("train", "adding", "--out", tmp_path / "r", "--cell", "lstn",
                               check=False), "--cell must be one of")
    assert_clear_error(lstmkit("train", "adding", "--out", tmp_path / "r", "--hidden", 0,
                               check=False), "--hidden must be at least 1")
    assert_clear_error(lstmkit("train", "names", "--out", tmp_path / "r", "--split", "random",
                               check=False), "--split must be one of standard, disjoint")
    assert_clear_error(lstmkit("train", "names", "--out", tmp_path / "r", "--class-weight", 2,
                               check=False), "--class-weight must be in [0, 1], got 2.0")


def test_missing_data_says_where_it_looked(tmp_path):
    result = lstmkit("train", "names", "--out", tmp_path / "r", "--data-dir", tmp_path / "none",
                     check=False)
    assert_clear_error(result, "lstmkit data fetch names")


def test_bad_csv_names_the_row(tmp_path):
    csv = tmp_path / "s.csv"
    csv.write_text("t,v\n" + "".join(f"{i},{i + 1}\n" for i in range(40)) + "40,oops\n")
    result = lstmkit("train", "forecast", "--out", tmp_path / "r", "--path", csv, "--window", 4,
                     "--horizon", 3, check=False)
    assert_clear_error(result, "oops")


def test_existing_run_needs_resume_and_resume_keeps_config(tmp_path):
    run = tmp_path / "r"
    args = ["train", "adding", "--out", run, "--length", 6, "--hidden", 4, "--epochs", 1,
            "--steps-per-epoch", 2]
    lstmkit(*args)
    assert_clear_error(lstmkit(*args, check=False), "already holds a run", "--resume")
    assert_clear_error(lstmkit(*args, "--resume", "--hidden", 8, check=False),
                       "cannot change --hidden")


def test_using_a_folder_that_is_not_a_run(tmp_path):
    assert_clear_error(lstmkit("predict", tmp_path, "Smith", check=False), "config.json")
    assert_clear_error(lstmkit("sample", tmp_path / "nope", check=False), "not a folder")


# ---------------------------------------------------------------------- the theory commands
def test_explain_prints_the_worked_unit():
    out = lstmkit("explain").stdout
    assert "(1 x 2.70) + (1 x 1.63) + 1.62 = 5.95" in out
    assert "Prediction for day 5: 0.006" in out and "Prediction for day 5: 0.969" in out


def test_gradflow_table_and_plot(tmp_path):
    out = lstmkit("gradflow", "--length", 20, "--hidden", 8, "--train-steps", 30, "--out",
                  tmp_path).stdout
    assert "| rnn | mean norm dL/dh_{T-k} |" in out and "| lstm | mean norm dL/dc_{T-k} |" in out
    assert "after 30 Adam steps on the adding problem" in out
    assert out.count("| gru | mean spectral norm dh_T/dh_{T-k} |") == 2     # fresh and trained
    for name in ("gradflow.png", "gradflow-trained.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert (tmp_path / "gradflow.md").read_text().startswith("Gradient flow")


def test_demo_quick_writes_its_summary(tmp_path):
    lstmkit("demo", "--quick", "--out", tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    for part in ("One LSTM unit", "adding problem", "Gradient reaching back",
                 "Surnames to languages"):
        assert part in summary
    assert (tmp_path / "gradient-flow.png").is_file() and (tmp_path / "adding-lstm").is_dir()


def test_lags_experiment_tabulates_every_run(tmp_path):
    out = lstmkit("experiment", "lags", "--cells", "rnn,lstm", "--lengths", "8,12", "--steps",
                  100, "--hidden", 8, "--out", tmp_path).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "cell" not in line]
    assert len(rows) == 4 and {r.split("|")[2].strip() for r in rows} == {"rnn", "lstm"}
    assert (tmp_path / "adding-lags.md").is_file() and (tmp_path / "adding-T12.png").is_file()


def test_lags_experiment_on_the_copy_task_reports_accuracy(tmp_path):
    out = lstmkit("experiment", "lags", "--task", "copy", "--cells", "gru", "--lengths", 6,
                  "--steps", 100, "--hidden", 8, "--out", tmp_path).stdout
    header = next(line for line in out.splitlines() if line.startswith("| T | cell"))
    assert "test accuracy" in header
    row = next(line for line in out.splitlines() if line.startswith("| 6 | gru"))
    assert 0 <= float(row.split("|")[4]) <= 1
    assert (tmp_path / "copy-T6.png").is_file()


@needs_data
def test_jsb_runs_and_scores_nll_per_step(tmp_path):
    run = tmp_path / "jsb"
    lstmkit("train", "jsb", "--out", run, "--epochs", 2, "--hidden", 8)
    results = json.loads((run / "results.json").read_text())
    assert 0 < results["test"]["nll_per_step"] < 88 * 0.7    # below a coin flip per key


def test_chars_bf16_trains_and_evaluates_in_float32(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 60)
    run = tmp_path / "bf16"
    lstmkit("train", "chars", "--out", run, "--epochs", 3, "--path", text, "--hidden", 24,
            "--embed", 8, "--layers", 2, "--bptt", 20, "--batch-size", 4, "--lr", 0.01,
            "--dropout", 0, "--bf16")
    assert json.loads((run / "config.json").read_text())["bf16"] is True
    losses = valid_losses(run)
    assert losses[-1] < losses[0]
    assert {str(t.dtype) for t in load_file(run / "model.safetensors").values()} == \
        {"torch.float32"}
