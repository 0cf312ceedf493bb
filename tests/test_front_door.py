"""What a new user meets first (issue 18): the command's help and version, where data is found,
the start line, the progress bar, clear stops, resume, predict on any names, forecast dates,
CSV headers and the plots' labels. In-process through tests/cli_harness.py, on tiny data."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from cli_harness import assert_one_line_error, run_cli

from lstmkit.cli import build_parser
from lstmkit.data import DATASETS, DataError, store
from lstmkit.runio import atomic_write_bytes


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
