"""What a new user meets first (issue 18): the command's help and version, where data is found,
the start line, the progress bar, clear stops, resume, predict on any names, forecast dates,
CSV headers and the plots' labels. In-process through tests/cli_harness.py, on tiny data."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from cli_harness import assert_one_line_error, run_cli

from lstmkit import plots
from lstmkit.cli import build_parser
from lstmkit.data import DATASETS, DataError, load_series, romanize, store
from lstmkit.data.dates import infer_frequency, parse_date
from lstmkit.runio import atomic_write_bytes
from lstmkit.tasks.synthetic import AddingTask


# ---------------------------------------------------------------------- item 8: the command
def test_version():
    result = run_cli("--version")
    assert result.code == 0 and result.out.startswith("lstmkit 0.1.0 (torch ")


def test_bare_command_prints_the_help_not_a_usage_error():
    result = run_cli()
    assert result.code == 0 and result.err == ""
    assert result.out.startswith("usage: lstmkit") and "train a model on a task" in result.out


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_help_shows_its_default_and_choices():
    parser = build_parser()
    for command, sub in subparsers(parser).items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or \
                    isinstance(action, argparse._HelpAction):
                continue
            text = formatter._expand_help(action)
            if not action.required:
                assert "default" in text, (command, action.option_strings, text)
            if action.choices:
                assert "{" + ",".join(action.choices) + "}" in sub.format_help()
    train = subparsers(parser)["train"]._get_formatter()
    hidden = next(a for a in subparsers(parser)["train"]._actions if a.dest == "hidden")
    assert "(default: 128; names 256, ptb 200, chars 512, forecast 32, jsb 36)" in \
        " ".join(train._expand_help(hidden).split())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_are_written_with_the_umask_mode_not_mkstemps(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "f.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == mode


def test_a_runs_files_are_0644(tmp_path):
    old = os.umask(0o022)
    try:
        result = run_cli("train", "adding", "--out", tmp_path / "r", "--length", 5, "--hidden", 4,
                         "--epochs", 1, "--steps-per-epoch", 2, "--batch-size", 4)
    finally:
        os.umask(old)
    assert result.code == 0, result.err
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file()]
    assert len(files) >= 6
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == \
        {p.name: "0o644" for p in files}




# ---------------------------------------------------------------------- item 11: progress
class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_redraws_on_a_terminal(monkeypatch):
    from lstmkit.train import Progress

    stream = Terminal()
    bar = Progress(0, 3, total=4, stream=stream)
    for loss in (None, 0.5, 0.25, 0.125):
        bar.update(loss)
    bar.close()
    assert type(bar.bar).__module__.startswith("tqdm")
    text = stream.getvalue()
    assert "\r" in text and "epoch 1/3:" in text and "/4 [" in text and "step/s" in text


def test_progress_in_a_pipe_writes_whole_lines(monkeypatch):
    from lstmkit.train import Progress

    monkeypatch.setattr(Progress, "LOG_SECONDS", 0.0)
    stream = io.StringIO()
    bar = Progress(1, 2, total=3, done=1, stream=stream)     # resumed after one batch
    bar.update(None)
    bar.update(0.5)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) >= 2
    assert all(line.startswith("epoch 2/2: ") for line in lines)
    assert "2/3" in lines[-2] and "loss n/a" in lines[-2]      # no finite step yet: not 0.0000
    assert "3/3" in lines[-1] and "loss 0.5000" in lines[-1]


def test_progress_in_a_pipe_is_quiet_for_short_epochs():
    from lstmkit.train import Progress

    stream = io.StringIO()
    bar = Progress(0, 1, total=100, stream=stream)
    for _ in range(100):
        bar.update(1.0)
    bar.close()
    assert stream.getvalue() == ""


# ---------------------------------------------------------------------- items 1, 9: data, start
DATA = os.environ.get("LSTMKIT_DATA")
SHARED_FOLDERS = store._shared_folders


def fake_names(folder: Path) -> None:
    """Names files laid out like the registry's (18 languages, four names each)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, f in enumerate(DATASETS["names"].files):
        folder.joinpath(f.name).write_text("".join(f"Name{chr(97 + k)}{chr(97 + i)}\n"
                                                   for i in range(4)))


NAMES_TINY = ("--epochs", 1, "--max-steps", 2, "--hidden", 4, "--embed", 4, "--layers", 1)


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No $LSTMKIT_DATA, no ../shared/data, an empty cache; run from tmp_path/work/project."""
    monkeypatch.delenv("LSTMKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(store, "_shared_folders", lambda: [])
    cwd = tmp_path / "work" / "project"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    return tmp_path


def test_data_is_found_in_shared_data_beside_the_current_directory(no_data, monkeypatch):
    monkeypatch.setattr(store, "_shared_folders", SHARED_FOLDERS)
    fake_names(no_data / "work" / "shared" / "data" / "names")
    result = run_cli("train", "names", "--out", "run", *NAMES_TINY)
    assert result.code == 0, result.err
    start = result.out.splitlines()[0]
    assert start.startswith("train names: cell lstm, engine auto, ") and " parameters; " in start
    assert f"from {no_data / 'work' / 'shared' / 'data' / 'names'} (../shared/data from the " \
        "current directory)" in start
    # $LSTMKIT_DATA comes first
    fake_names(no_data / "env" / "names")
    monkeypatch.setenv("LSTMKIT_DATA", str(no_data / "env"))
    result = run_cli("train", "names", "--out", "run2", *NAMES_TINY)
    assert f"from {no_data / 'env' / 'names'} (LSTMKIT_DATA)" in result.out.splitlines()[0]


@pytest.mark.skipif(not Path(__file__).parents[1].joinpath("..", "shared", "data").is_dir(),
                    reason="no ../shared/data beside the project")
def test_shared_data_beside_the_project_is_found_from_anywhere(no_data):
    places = dict(SHARED_FOLDERS())
    assert places["../shared/data beside the project"] == \
        Path(__file__).parents[1].joinpath("..", "shared", "data").resolve()


def test_missing_data_is_downloaded_into_the_first_place_saying_so(no_data, monkeypatch):
    fetched = []

    def fetch(name, data_dir=None, **kwargs):
        fetched.append(name)
        fake_names(store.data_dir() / name)

    monkeypatch.setattr(store, "fetch", fetch)
    result = run_cli("train", "names", "--out", "run", *NAMES_TINY)
    assert result.code == 0, result.err
    cache = no_data / "xdg" / "lstmkit"
    assert fetched == ["names"]
    assert f"lstmkit: data set names not found; downloading it into {cache}" in result.err
    assert f"from {cache / 'names'} (cache)" in result.out.splitlines()[0]


def test_a_failed_download_is_one_line_saying_where_it_looked(no_data, monkeypatch):
    def fetch(name, data_dir=None, **kwargs):
        raise DataError("could not download https://example.org/names.zip: no network")

    monkeypatch.setattr(store, "fetch", fetch)
    result = run_cli("train", "names", "--out", "run", *NAMES_TINY)
    notice, error = result.err.splitlines()             # what it tried, then why it failed
    assert result.code == 2 and notice.startswith("lstmkit: data set names not found; downloading")
    assert error.startswith("lstmkit: error: ") and "Traceback" not in result.err
    for fragment in ("Looked in", "no network", "lstmkit data fetch names"):
        assert fragment in error
    assert not (no_data / "work" / "project" / "run").exists()


def test_a_named_data_dir_is_not_filled_behind_the_users_back(no_data, monkeypatch):
    monkeypatch.setattr(store, "fetch", lambda *a, **k: pytest.fail("downloaded"))
    result = run_cli("train", "names", "--out", "run", "--data-dir", no_data / "d", *NAMES_TINY)
    assert_one_line_error(result, "--data-dir", "lstmkit data fetch names")


def test_every_train_prints_one_start_line(tmp_path):
    result = run_cli("train", "adding", "--out", tmp_path / "r", "--length", 5, "--hidden", 4,
                     "--epochs", 1, "--steps-per-epoch", 2, "--batch-size", 4, "--cell", "gru",
                     "--engine", "python")
    assert result.code == 0, result.err
    starts = [line for line in result.out.splitlines() if line.startswith("train ")]
    assert starts == ["train adding: cell gru, engine python, 101 parameters; data train 8 fresh "
                      f"each epoch, test 1,000 sequences of length 5, made in code; device cpu, "
                      f"{torch.get_num_threads()} threads"]


# ---------------------------------------------------------------------- item 2: chars test split
def test_chars_holds_out_a_real_test_split(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i}: to be, or not to be.\n" for i in range(80)))
    run = tmp_path / "chars"
    result = run_cli("train", "chars", "--out", run, "--path", text, "--hidden", 8, "--embed", 4,
                     "--layers", 1, "--bptt", 10, "--batch-size", 4, "--epochs", 1)
    assert result.code == 0, result.err
    tokens = json.loads((run / "config.json").read_text())["meta"]["tokens"]
    n = len(text.read_text())
    assert tokens == {"train": n - 2 * int(n * 0.05), "valid": int(n * 0.05),
                      "test": int(n * 0.05)}
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["loss"] != results["valid"]["loss"]     # not the valid split again
    evaluated = run_cli("evaluate", run).out.splitlines()
    assert evaluated[0].startswith("valid: ") and evaluated[1].startswith("test: ")
    assert evaluated[0][len("valid"):] != evaluated[1][len("test"):]


# ---------------------------------------------------------------------- items 3, 4: forecast
def test_frequency_is_inferred_from_the_dates():
    def each(start, step, n=6):
        return [start + k * step for k in range(n)]

    months = [datetime(2000 + m // 12, m % 12 + 1, 1) for m in range(0, 36, 1)]
    assert infer_frequency(months).name == "monthly" and infer_frequency(months).season == 12
    assert infer_frequency(months[::3]).name == "quarterly"
    assert infer_frequency(months[::12]).name == "yearly"
    assert infer_frequency(months[::12]).season == 1
    assert infer_frequency(each(datetime(2020, 1, 1), timedelta(days=1))).season == 7
    assert infer_frequency(each(datetime(2020, 1, 1), timedelta(weeks=1))).name == "weekly"
    assert infer_frequency(each(datetime(2020, 1, 1), timedelta(hours=1))).season == 24
    assert infer_frequency(each(datetime(2020, 1, 1), timedelta(days=2))).name == "every 2 days"
    assert infer_frequency([datetime(2020, 1, 1), datetime(2020, 1, 2),
                            datetime(2020, 1, 4)]) is None                       # irregular
    assert infer_frequency(months).add(datetime(2001, 1, 31), 1) == datetime(2001, 2, 28)
    assert [parse_date(t) for t in ("1949-01", "1949", "1949-01-31 12:00", "12", "x")] == \
        [datetime(1949, 1, 1), datetime(1949, 1, 1), datetime(1949, 1, 31, 12), None, None]


def weekly_pattern_csv(path: Path, days: int = 70, header: bool = True) -> Path:
    """Daily values repeating every 7 days: a seasonal naive forecast 7 back is exact."""
    start = datetime(2020, 1, 1)
    rows = [f"{(start + timedelta(days=k)):%Y-%m-%d},{10 + (k % 7) ** 2}"
            for k in range(days)]
    path.write_text(("day,visits\n" if header else "") + "\n".join(rows) + "\n")
    return path


FORECAST_TINY = ("--window", 8, "--horizon", 7, "--difference", 0, "--hidden", 4, "--epochs", 2)


def test_forecast_reads_dates_infers_the_frequency_and_writes_a_csv(tmp_path, monkeypatch):
    csv_path = weekly_pattern_csv(tmp_path / "visits.csv")
    run = tmp_path / "run"
    result = run_cli("train", "forecast", "--out", run, "--path", csv_path, *FORECAST_TINY)
    assert result.code == 0, result.err
    assert "dates in 'day', daily, seasonal naive 7 back" in result.out.splitlines()[0]
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["mape_seasonal_naive"] < 1e-9        # 7 back, not 12 back

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig) or Path(path))
    result = run_cli("forecast", run, "--horizon", 3, "--out", tmp_path / "ahead.png")
    assert result.code == 0, result.err
    assert "dates: 'day', daily, the last 2020-03-10" in result.out
    assert [line.split(":")[0] for line in result.out.splitlines() if line.startswith("+")] == \
        ["+1 2020-03-11", "+2 2020-03-12", "+3 2020-03-13"]
    table = (tmp_path / "ahead.csv").read_text().splitlines()
    assert table[0] == "step,date,forecast,low_95,high_95" and len(table) == 4
    assert table[1].startswith("1,2020-03-11,")
    low, forecast, high = (float(table[1].split(",")[k]) for k in (3, 2, 4))
    assert low <= forecast <= high
    (ax,) = figures[0].axes
    assert ax.get_xlabel() == "date" and ax.get_ylabel() == "visits"
    assert ax.xaxis.get_major_formatter().__class__.__name__.startswith("Auto")     # dates
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1       # right of the axes


def test_a_headerless_csv_keeps_its_first_row(tmp_path):
    csv_path = weekly_pattern_csv(tmp_path / "visits.csv", header=False)
    series = load_series(csv_path, find_dates=True, test_size=7, valid_size=7)
    assert len(series.values) == 70 and series.values[0] == 10 and not series.has_header
    assert series.name == "column 1" and series.dates[0] == "2020-01-01"
    with_header = load_series(weekly_pattern_csv(tmp_path / "h.csv"), test_size=7, valid_size=7)
    assert with_header.has_header and len(with_header.values) == 70
    # the start line says how the file was read
    result = run_cli("train", "forecast", "--out", tmp_path / "run", "--path", csv_path,
                     *FORECAST_TINY)
    assert result.code == 0, result.err
    assert "train 56, valid 7, test 7 points" in result.out.splitlines()[0]
    assert "no header row: the first row is data" in result.out.splitlines()[0]


# ---------------------------------------------------------------------- item 10: plot labels
def test_confusion_matrix_has_a_title_and_a_labelled_colour_bar(tmp_path, monkeypatch):
    figures = {}
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.update({Path(path).name: fig}))
    fake_names(tmp_path / "data" / "names")
    result = run_cli("train", "names", "--out", tmp_path / "run", "--data-dir", tmp_path / "data",
                     *NAMES_TINY)
    assert result.code == 0, result.err
    ax, bar = figures["confusion.png"].axes
    assert ax.get_title() == "Test names (18): true language (rows) vs predicted (columns)"
    assert bar.get_ylabel() == "fraction of the true class (each row sums to 1)"
    (loss,) = figures["loss.png"].axes
    assert loss.get_ylabel() == "cross-entropy (nats/name)"


@pytest.mark.parametrize("task, args, label", [
    ("chars", ("--hidden", 4, "--embed", 4, "--layers", 1, "--bptt", 10, "--batch-size", 2),
     "cross-entropy (nats/char)"),
    ("adding", ("--length", 5, "--hidden", 4, "--steps-per-epoch", 2, "--batch-size", 4),
     "mean squared error"),
])
def test_loss_axes_name_the_loss(tmp_path, monkeypatch, task, args, label):
    figures = {}
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.update({Path(path).name: fig}))
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    extra = ("--path", text) if task == "chars" else ()
    result = run_cli("train", task, "--out", tmp_path / "run", "--epochs", 1, *extra, *args)
    assert result.code == 0, result.err
    assert figures["loss.png"].axes[0].get_ylabel() == label


# ---------------------------------------------------------------------- item 5: clear stops
def test_values_out_of_float32s_range_are_refused_naming_the_row(tmp_path):
    csv_path = tmp_path / "s.csv"
    csv_path.write_text("t,v\n" + "".join(f"{i},{1e300 if i == 5 else i + 1}\n"
                                          for i in range(40)))
    result = run_cli("train", "forecast", "--out", tmp_path / "run", "--path", csv_path,
                     "--window", 4, "--horizon", 3, "--difference", 0)
    assert_one_line_error(result, "data row 6: 1e+300 is out of range")
    assert not (tmp_path / "run").exists()


def nan_losses(monkeypatch):
    """Every training step of the adding task has a NaN loss (as inf inputs would give)."""
    original = AddingTask.train_step

    def train_step(self, model, batch, carry):
        loss, carry = original(self, model, batch, carry)
        return loss * float("nan"), carry

    monkeypatch.setattr(AddingTask, "train_step", train_step)


ADDING_TINY = ("--length", 5, "--hidden", 4, "--steps-per-epoch", 3, "--batch-size", 4)


def test_every_step_nan_stops_naming_the_cause_and_leaves_no_folder(tmp_path, monkeypatch):
    nan_losses(monkeypatch)
    result = run_cli("train", "adding", "--out", tmp_path / "run", *ADDING_TINY)
    line = assert_one_line_error(result, "every step of epoch 1 had a non-finite loss or "
                                 "gradient (the first at step 1)", "inputs out of range",
                                 "nothing was kept")
    assert "does not exist" not in line and "loss 0.0000" not in result.err
    assert not (tmp_path / "run").exists()         # nothing that later commands choke on
    # a folder the user made stays, emptied
    (tmp_path / "mine").mkdir()
    result = run_cli("train", "adding", "--out", tmp_path / "mine", *ADDING_TINY)
    assert result.code == 2 and list((tmp_path / "mine").iterdir()) == []


def test_nan_after_a_checkpoint_keeps_it_and_says_where(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert run_cli("train", "adding", "--out", run, "--epochs", 1, *ADDING_TINY).code == 0
    nan_losses(monkeypatch)
    result = run_cli("train", "adding", "--out", run, "--epochs", 2, "--resume", *ADDING_TINY)
    assert_one_line_error(result, "every step of epoch 2", "last good checkpoint is kept in")
    assert (run / "model.safetensors").is_file()


def test_a_run_without_a_model_yet_says_so(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "adding", "--out", run, "--epochs", 1, *ADDING_TINY).code == 0
    (run / "model.safetensors").unlink()                 # as after a kill before validation
    assert_one_line_error(run_cli("evaluate", run), "holds no trained model yet",
                          f"lstmkit train adding --out {run} --resume")


# ---------------------------------------------------------------------- item 6: resume
def test_resume_of_a_folder_that_does_not_exist_is_refused(tmp_path):
    result = run_cli("train", "adding", "--out", tmp_path / "typo", "--resume", *ADDING_TINY)
    assert_one_line_error(result, f"--resume: {tmp_path / 'typo'} does not exist",
                          "leave out --resume")
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    result = run_cli("train", "adding", "--out", tmp_path / "empty", "--resume", *ADDING_TINY)
    assert_one_line_error(result, "holds no run (no config.json)")
    assert list((tmp_path / "empty").iterdir()) == []


def test_resume_passes_over_a_truncated_latest_checkpoint_and_says_so(tmp_path):
    run = tmp_path / "run"
    args = ("--checkpoint-every", 2, "--epochs", 2, *ADDING_TINY)
    assert run_cli("train", "adding", "--out", run, *args, "--max-steps", 4).code == 0
    latest = json.loads((run / "checkpoint" / "latest.json").read_text())["name"]
    older = sorted(p.stem for p in (run / "checkpoint").glob("ckpt-*.json"))
    assert older == ["ckpt-000000003", latest] and latest == "ckpt-000000004"   # epoch end
    damaged = run / "checkpoint" / f"{latest}.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])                # a full disk, say
    result = run_cli("train", "adding", "--out", run, *args, "--max-steps", 0, "--resume")
    assert result.code == 0, result.err
    assert f"checkpoint {latest} cannot be read" in result.out
    assert "using the newest intact one, ckpt-000000003, instead" in result.out
    assert f"resumed {run} at epoch 2, step 3" in result.out
    # and it ends where a run never stopped ends
    full = tmp_path / "full"
    assert run_cli("train", "adding", "--out", full, *args).code == 0
    assert json.loads((run / "results.json").read_text())["test"] == \
        json.loads((full / "results.json").read_text())["test"]


# ---------------------------------------------------------------------- item 7: predict
@pytest.mark.parametrize("name, read_as, left_out", [
    ("Достоевский", "Dostoevskii", []), ("ЩУКИН", "SHCHUKIN", []),
    ("Παπαδόπουλος", "Papadopoulos", []), ("محمد", "Mhmd", []), ("Łukasz", "Lukasz", []),
    ("Nguyễn", "Nguyen", []), ("Wang李明", "Wang", ["李", "明"]), ("김", "", ["김"]),
    ("O'Neil", "O'Neil", []),
])
def test_romanize_any_script(name, read_as, left_out):
    assert romanize(name) == (read_as, left_out)


@pytest.fixture(scope="module")
def names_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    fake_names(root / "data" / "names")
    result = run_cli("train", "names", "--out", root / "run", "--data-dir", root / "data",
                     *NAMES_TINY)
    assert result.code == 0, result.err
    return root / "run"


def test_predict_reads_any_script_and_one_bad_name_does_not_stop_the_batch(names_run):
    result = run_cli("predict", names_run, "Достоевский", "李", "Wang李明", "x" * 100_000,
                     "Smith", "--top", 2)
    assert result.code == 2                                       # some names were skipped
    out = result.out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        "Достоевский (read as Dostoevskii)", "Wang李明 (read as Wang; left out 李明)", "Smith"]
    assert all(len(line.split(": ")[1].split(", ")) == 2 for line in out)
    err = result.err.splitlines()
    assert err == ["lstmkit: error: name 2 '李': no letter the model can read (李 has no "
                   "transliteration here); skipped",
                   f"lstmkit: error: name 4 {repr('x' * 100_000)[:57]}...: 100,000 "
                   "characters; a name may have at most 100; skipped"]


def test_predict_names_from_a_file_or_stdin_as_json(names_run, tmp_path, monkeypatch):
    listing = tmp_path / "names.txt"
    listing.write_text("Smith\n\nΓεωργίου\n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO("Nguyen\n"))
    result = run_cli("predict", names_run, "Ivanov", "-", "--file", listing, "--json",
                     "--top", 1)
    assert result.code == 0, result.err
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [(r["name"], r["read_as"]) for r in records] == [
        ("Ivanov", "Ivanov"), ("Nguyen", "Nguyen"), ("Smith", "Smith"),
        ("Γεωργίου", "Georgiou")]
    languages = json.loads((names_run / "config.json").read_text())["meta"]["languages"]
    assert all(len(r["languages"]) == 1 and r["languages"][0]["language"] in languages and
               0 < r["languages"][0]["probability"] <= 1 for r in records)
    bad = run_cli("predict", names_run, "123", "--json")
    assert bad.code == 2 and json.loads(bad.out)["error"].startswith("no letter")


def test_predict_without_names_is_one_line(names_run, tmp_path):
    assert_one_line_error(run_cli("predict", names_run), "no names to classify")
    assert_one_line_error(run_cli("predict", names_run, "--file", tmp_path / "none.txt"),
                          "does not exist")
