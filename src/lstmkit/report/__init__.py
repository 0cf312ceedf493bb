"""A run's report: one self-contained HTML file (``lstmkit report RUN``, and RUN/report.html at
the end of every ``lstmkit train``).

Sections: what was trained; the training and validation curves; the final metrics beside the
published anchors (``anchors.py``); the task's own section (a confusion matrix with precision
and recall, samples, the forecast with its interval, curves against a baseline); and "Inside the
network": for one input (``--input``, else the run's validation data) the text coloured by a
chosen unit's c_t, h_t or gate, unit x time heatmaps, gate saturation, |dL/dh_t| and |dL/dc_t|
through time and the most input-selective units, all from ``layer.trace`` (``probes.py``,
``inside.py``). The page draws its charts itself (page.js, inline SVG and canvas) from data
embedded in it, makes no request, and is written atomically.

    write_report(run_dir, cfg, task, model, out=None, text=None) -> Path

``task`` must hold its data (``make_task(cfg, for_training=True)``): the report reads the
validation and test data.
"""

from __future__ import annotations

from pathlib import Path

from ..runio import atomic_write_bytes
from . import inside as inside_mod
from . import sections
from .page import render
from .probes import probe, read_input, series_dates

__all__ = ["write_report", "build_report"]


def build_report(run_dir: str | Path, cfg, task, model, text: str | None = None) -> str:
    """The report's HTML (see the module docstring); ``text`` is ``--input`` (text or a file
    name), None for the run's own data. Raises ValueError (RunError, DataError) with a
    one-line message for a damaged run folder or an unusable input."""
    run = Path(run_dir)
    text = read_input(text)
    records = sections.read_metrics(run / "metrics.jsonl")
    results = sections.read_results(run)
    model.eval()
    if hasattr(model.rnn, "trace"):
        layers, max_steps = inside_mod.plan(model.rnn)
        traced = probe(task, model, text, max_steps)
        inside = inside_mod.inside(traced, model.rnn, layers, max_steps)
    else:
        inside = inside_mod.untraced(model.rnn, text)
    dates = series_dates(cfg) if cfg.task == "forecast" else None
    charts = {f"chart-curve-{k}": c for k, c in enumerate(sections.curves(cfg, records))}
    section = sections.task_section(cfg, task, model, records, dates)
    title = f"lstmkit report: {cfg.task} run {run.resolve().name}"
    subtitle = (f"{cfg.cell}, {model.rnn.num_layers} x {model.rnn.hidden_size} units; "
                f"{run.resolve()}")
    return render(title, subtitle, sections.trained(cfg, model, run, results),
                  sections.clean(charts), sections.final_metrics(cfg, results, records),
                  sections.clean(section), sections.clean(inside))


def write_report(run_dir: str | Path, cfg, task, model, out: str | Path | None = None,
                 text: str | None = None) -> Path:
    """Write the report (default RUN/report.html) atomically; returns its path."""
    path = Path(out) if out else Path(run_dir) / "report.html"
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give the HTML file to write")
    page = build_report(run_dir, cfg, task, model, text)
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
