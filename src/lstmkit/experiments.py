"""Experiment grids that run the trainer many times and tabulate what they measured.

``lags``: the adding problem (or the copy task) at several time lags T for several cells of
the same size and the same budget: validation MSE (copy: accuracy on the copied symbols)
against steps (plots), the test MSE (cross-entropy and accuracy) of each run's best model, and
the first evaluation at which each run solved the task (adding: MSE below 0.01; copy: every
copied symbol right).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from . import plots
from .config import defaults_for
from .runio import atomic_write_bytes
from .tasks.synthetic import SOLVED_MSE
from .train import read_metrics, train


def solved_at(records: list[dict], task: str) -> int | None:
    """The first step at which validation reached the solved mark (adding: MSE < 0.01; copy:
    every copied symbol right), else None."""
    for r in records:
        v = r.get("valid")
        if v and (v["loss"] < SOLVED_MSE if task == "adding" else v.get("accuracy", 0) >= 1.0):
            return r["step"]
    return None


def lags(out: str | Path, task: str = "adding", cells=("rnn", "lstm", "gru", "peephole",
         "coupled"), lengths=(50, 100, 200, 400), steps: int = 3000, hidden: int = 128,
         init: str = "default", seed: int = 0, engine: str = "auto", threads: int = 0,
         log=print) -> str:
    """Run the grid into `out` (one run folder per cell and T); returns a markdown report."""
    out = Path(out)
    epochs = max(1, steps // 100)
    rows, curves = [], {}
    for T in lengths:
        for cell in cells:
            run = out / f"{task}-T{T}-{cell}"
            if not (run / "results.json").exists():
                cfg = dataclasses.replace(defaults_for(task), cell=cell, length=T, hidden=hidden,
                                          epochs=epochs, steps_per_epoch=100, init=init,
                                          seed=seed, patience=0, engine=engine,
                                          threads=threads)
                log(f"-- {task} T={T} {cell}: {steps} steps -> {run}")
                train(cfg, run, log=log)
            records = read_metrics(run / "metrics.jsonl")
            results = json.loads((run / "results.json").read_text())
            key = "loss" if task == "adding" else "accuracy"      # copy: what "solved" reads
            curves[f"T={T} {cell}"] = [(r["step"], r["valid"][key]) for r in records
                                       if "valid" in r]
            rows.append((T, cell, results["test"], solved_at(records, task),
                         results["train_seconds"]))
    metric = "MSE" if task == "adding" else "cross-entropy"
    columns = [f"test {metric} (best model)"] + ([] if task == "adding" else ["test accuracy"])
    lines = ["| T | cell | " + " | ".join(columns) + " | solved at step | training time |",
             "|---:|---|" + "---:|" * (len(columns) + 2)]
    for T, cell, test, solved, secs in rows:
        values = [f"{test['loss']:.4f}"] + ([] if task == "adding" else [f"{test['accuracy']:.3f}"])
        lines.append(f"| {T} | {cell} | " + " | ".join(values)
                     + f" | {solved or 'not solved'} | {secs:.1f} s |")
    report = (f"{task}, hidden {hidden}, {steps} Adam steps of batch 64, init {init}, "
              f"seed {seed}\n\n" + "\n".join(lines) + "\n")
    for T in lengths:
        series = {k.split(" ", 1)[1]: [v for _, v in c] for k, c in curves.items()
                  if k.startswith(f"T={T} ")}
        x = [s for s, _ in curves[f"T={T} {cells[0]}"]]
        label = "validation MSE" if task == "adding" else \
            "validation accuracy on the copied symbols"
        plots.curves(series, out / f"{task}-T{T}.png", "step", label, f"{task}, T = {T}",
                     log_y=task == "adding", x=x)
    atomic_write_bytes(out / f"{task}-lags.md", report.encode())
    return report
