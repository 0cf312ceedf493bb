"""Tiny run folders for the report tests (tests/test_report.py, tests/test_report_browser.py),
trained in-process through `lstmkit train` (which writes RUN/report.html), and reading back the
data a report page embeds."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli_harness import run_cli
from test_cli import tiny_ptb

TEXT = ('"To be, or not to be", that is the question:\nWhether \'tis nobler in the mind to '
        "suffer\nThe slings and arrows of outrageous fortune.\n") * 12


def write_text(folder: Path) -> Path:
    path = folder / "text.txt"
    path.write_text(TEXT)
    return path


def write_series(folder: Path, months: int = 72) -> Path:
    """A monthly series with a trend and a season, dated from 2001-01."""
    import math

    rows = [f"{2001 + k // 12}-{k % 12 + 1:02d},{100 + 2 * k + 15 * math.sin(k * math.pi / 6):.2f}"
            for k in range(months)]
    path = folder / "series.csv"
    path.write_text("Month,Sales\n" + "\n".join(rows) + "\n")
    return path


def train_args(task: str, root: Path) -> list:
    """`lstmkit train` arguments of a run of a few seconds."""
    args = {
        "chars": lambda: ["chars", "--path", write_text(root), "--embed", 8, "--hidden", 12,
                          "--layers", 2, "--bptt", 20, "--batch-size", 4, "--lr", 0.01,
                          "--epochs", 1],
        "chars-gru": lambda: ["chars", "--path", write_text(root), "--embed", 8, "--hidden", 10,
                              "--layers", 1, "--bptt", 20, "--batch-size", 4, "--cell", "gru",
                              "--epochs", 1, "--dropout", 0],
        "adding": lambda: ["adding", "--length", 20, "--steps-per-epoch", 10, "--batch-size", 16,
                           "--hidden", 12, "--epochs", 2],
        "copy": lambda: ["copy", "--length", 10, "--steps-per-epoch", 10, "--batch-size", 16,
                         "--hidden", 12, "--embed", 4, "--epochs", 2, "--cell", "coupled"],
        "forecast": lambda: ["forecast", "--path", write_series(root), "--window", 12,
                             "--horizon", 6, "--hidden", 6, "--epochs", 3],
        "names": lambda: ["names", "--train-size", 200, "--hidden", 8, "--embed", 8,
                          "--layers", 2, "--batch-size", 32, "--epochs", 1],
        "ptb": lambda: ["ptb", "--path", tiny_ptb(root / "corpus", lines=200), "--hidden", 16,
                        "--embed", 16, "--bptt", 10, "--batch-size", 8, "--lr", 0.2,
                        "--epochs", 1],
        "jsb": lambda: ["jsb", "--hidden", 8, "--epochs", 1, "--cell", "rnn"],
    }
    return args[task]()


def train_run(task: str, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    args = train_args(task, root)
    run = root / "run"
    result = run_cli("train", args[0], "--out", run, *args[1:])
    assert result.code == 0, result.err[-3000:]
    return run


def page_data(page: Path | str) -> dict:
    """The JSON a report page embeds (script#report-data)."""
    text = Path(page).read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text,
                      re.S)
    assert found, "no embedded data"
    return json.loads(found.group(1))
