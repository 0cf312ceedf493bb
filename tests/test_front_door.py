"""What a new user meets first (issue 18): the command's help and version, where data is found,
the start line, the progress bar, clear stops, resume, predict on any names, forecast dates,
CSV headers and the plots' labels. In-process through tests/cli_harness.py, on tiny data."""

from __future__ import annotations

import argparse
import os
import stat

import pytest
from cli_harness import run_cli

from lstmkit.cli import build_parser
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


