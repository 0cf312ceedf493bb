"""The main job on built-in data, in a few minutes on two cores (``lstmkit demo``).

1. The classic one-unit LSTM, worked by hand: every gate's arithmetic in numbers.
2. A tanh RNN and an LSTM of the same size trained side by side on the adding problem (T = 50):
   the LSTM learns it, the RNN stays at the baseline of predicting 1 (MSE 0.167).
3. How much gradient reaches back through time in each trained model: mean ||dL/dh_t|| for a
   loss at the last step, from lstmkit's trace.
4. With the names data present: a short surname classifier and a few predictions.

Everything goes into the output folder: one run folder per model, plots, and summary.md.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from . import plots
from .analysis import gradflow, worked_unit
from .config import defaults_for
from .data import MissingDataError, adding_problem, require
from .runio import atomic_write_bytes, load_state_into, read_tensors
from .tasks import make_task
from .train import train

ADDING = dict(length=50, hidden=64, lr=3e-3, epochs=15, steps_per_epoch=100, patience=0)
NAMES = dict(hidden=128, layers=1, bidirectional=False, dropout=0.0, epochs=3, lr=3e-3,
             patience=0, class_weight=0.0, weight_drop=0.0, input_dropout=0.0,
             lr_decay=1.0)   # the quick model of the documented demo, unweighted as it was
EXAMPLES = ("Dostoevsky", "Nguyen", "Schmidt", "O'Brien", "Rossi", "Tanaka", "Kowalski")
QUICK = dict(epochs=2, steps_per_epoch=20), dict(epochs=1, train_size=500)   # a smoke run


def trained_model(run: Path, cfg):
    model = make_task(cfg, for_training=False).build_model()
    load_state_into(model, read_tensors(run / "model.safetensors"), run / "model.safetensors")
    return model.eval()


def run_demo(out: str | Path, data_dir: str | None = None, log=print, quick: bool = False) -> str:
    """Run the demo into folder `out`; returns the summary (also written to summary.md).
    quick: tiny budgets, to check that every part runs (the results mean nothing then)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    md = ["# lstmkit demo", ""]

    log("== 1. One LSTM unit, worked by hand ==\n")
    text = worked_unit.explain()
    log(text)
    md += ["## 1. One LSTM unit, worked by hand", "", "```", text, "```", ""]

    log("\n== 2. The adding problem, T = 50: tanh RNN against LSTM ==\n")
    results, models = {}, {}
    for cell in ("rnn", "lstm"):
        cfg = dataclasses.replace(defaults_for("adding"), cell=cell,
                                  **{**ADDING, **(QUICK[0] if quick else {})})
        run = out / f"adding-{cell}"
        log(f"-- {cell}: {cfg.epochs * cfg.steps_per_epoch} Adam steps, batch {cfg.batch_size}, "
            f"hidden {cfg.hidden} -> {run}")
        results[cell] = train(cfg, run, log=log)
        models[cell] = trained_model(run, cfg)
    md += ["## 2. The adding problem, T = 50", "",
           "| cell | test MSE | solved (< 0.01) | training time |", "|---|---:|---|---:|"]
    for cell, r in results.items():
        mse = r["test"]["mse"]
        md.append(f"| {cell} | {mse:.4f} | {'yes' if mse < 0.01 else 'no'} | "
                  f"{r['train_seconds']:.0f} s |")
    md += ["", "Predicting 1 whatever the input scores MSE 0.167.", ""]

    log("\n== 3. Gradient reaching back through time (loss at the last step) ==\n")
    x, _ = adding_problem(64, ADDING["length"], torch.Generator().manual_seed(1))
    curves = {}
    for cell, model in models.items():
        g = gradflow.gradient_norms(model.rnn, x)
        curves[cell] = gradflow.steps_back_curve(g["grad_h"][0, 0], g["grad_h0"][0, 0])
    plots.curves({f"{c}: mean |dL/dh|": v for c, v in curves.items()},
                 out / "gradient-flow.png", "steps back from the last step", "gradient norm",
                 "trained on the adding problem", log_y=True)
    ks = [k for k in (0, 1, 5, 10, 25, ADDING["length"]) if k <= ADDING["length"]]
    table = ["| cell | " + " | ".join(f"{k} back" for k in ks) + " |",
             "|---|" + "---:|" * len(ks)]
    table += [f"| {c} | " + " | ".join(f"{v[k]:.2e}" for k in ks) + " |"
              for c, v in curves.items()]
    log("\n".join(table))
    md += ["## 3. Gradient reaching back through time", "",
           "Mean norm of dL/dh_t, k steps before the last step, for a loss on the last output "
           "of each trained model (`gradient-flow.png`):", "", *table, ""]

    log("\n== 4. Surnames to languages ==\n")
    try:
        require("names", data_dir)
    except MissingDataError as e:
        log(f"skipped: {e}")
        md += ["## 4. Surnames to languages", "", "Skipped: the names data is not present "
               "(`lstmkit data fetch names`).", ""]
    else:
        cfg = dataclasses.replace(defaults_for("names"), data_dir=data_dir,
                                  **{**NAMES, **(QUICK[1] if quick else {})})
        run = out / "names"
        r = train(cfg, run, log=log)
        task = make_task(cfg, for_training=False)
        ranked = task.predict(trained_model(run, cfg), list(EXAMPLES), top=3)
        lines = [f"{name}: " + ", ".join(f"{lang} {p:.2f}" for lang, p in guesses)
                 for name, guesses in zip(EXAMPLES, ranked)]
        log("\n".join(lines))
        md += ["## 4. Surnames to languages", "",
               f"A {cfg.cell} of {cfg.hidden} units, {cfg.epochs} epochs "
               f"({r['train_seconds']:.0f} s): test accuracy {r['test']['accuracy']:.3f}, "
               f"macro-averaged {r['test']['macro_accuracy']:.3f}.", "", "```", *lines, "```",
               ""]

    md.append(f"Total time: {time.monotonic() - started:.0f} s.")
    summary = "\n".join(md) + "\n"
    atomic_write_bytes(out / "summary.md", summary.encode())
    log(f"\nwrote {out / 'summary.md'} and the plots and run folders beside it")
    return summary
