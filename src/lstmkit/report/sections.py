"""The report's sections other than "Inside the network": what was trained, the training
curves, the final metrics beside the anchors, and each task's own section (confusion matrix,
samples, forecast, curves against a baseline).

Charts are returned as specs the page draws (``line`` charts of named series; see page.js):
``{"title", "x": {"label", "labels"?}, "y": {"label", "log"?}, "series": [...]}``, a series
``{"name", "x", "y"}`` (a line), ``{"name", "y", "kind": "hline"}`` (a reference level), or
``{"name", "x", "lo", "hi", "kind": "band"}``.
"""

from __future__ import annotations

import json
import math
import platform
import re
import time
from pathlib import Path

import torch

from .._version import __version__
from ..cells import registry
from ..runio import RunError
from .anchors import anchors_for

MAX_METRICS_BYTES = 64 * 1024 * 1024
LOSS_UNITS = {"names": "cross-entropy, nats per name", "ptb": "cross-entropy, nats per word",
              "chars": "cross-entropy, nats per character", "adding": "MSE",
              "copy": "cross-entropy, nats per step", "jsb": "NLL, nats per time step",
              "forecast": "MSE of the scaled change z", "parity": "cross-entropy, nats per string"}
METRICS = {   # key: (label, format); the order the table lists them
    "names": {"accuracy": ("accuracy (fraction of names)", ".3f"),
              "macro_accuracy": ("macro-averaged accuracy (mean over languages)", ".3f"),
              "loss": ("cross-entropy, nats per name", ".4f")},
    "ptb": {"perplexity": ("perplexity (words)", ".2f"),
            "loss": ("cross-entropy, nats per word", ".4f"),
            "bits_per_token": ("bits per word", ".3f")},
    "chars": {"loss": ("cross-entropy, nats per character", ".4f"),
              "bits_per_token": ("bits per character", ".3f"),
              "perplexity": ("perplexity (characters)", ".3f")},
    "forecast": {"mape": ("MAPE of the forecast, %", ".2f"),
                 "mape_mean_change": ("MAPE of the mean change (transform alone), %", ".2f"),
                 "mape_seasonal_naive": ("MAPE of seasonal naive, %", ".2f"),
                 "mape_linear_trend": ("MAPE of a linear trend, %", ".2f"),
                 "loss": ("MSE in the model's units (log values if positive)", ".5f")},
    "adding": {"mse": ("MSE", ".4f"), "solved": ("solved (MSE below 0.01)", ".0f")},
    "copy": {"accuracy": ("copied symbols right (fraction)", ".3f"),
             "loss": ("cross-entropy, nats per step", ".4f"),
             "baseline_loss": ("memoryless cross-entropy, nats per step", ".4f")},
    "jsb": {"nll_per_step": ("NLL, nats per time step", ".3f")},
    "parity": {"accuracy": ("accuracy, training lengths (chance 0.5)", ".3f"),
               "long_accuracy": ("accuracy, longer strings (chance 0.5)", ".3f"),
               "loss": ("cross-entropy, training lengths", ".4f"),
               "long_loss": ("cross-entropy, longer strings", ".4f")},
}
DESCRIPTIONS = {"names": "surname -> language of origin, a character-level classifier",
                "ptb": "word-level language model", "chars": "character-level language model",
                "forecast": "time-series forecast", "adding": "the adding problem",
                "copy": "the copy task", "jsb": "polyphonic music, next-frame prediction",
                "parity": "parity of a bit string (odd count of ones), length generalisation"}


# ---------------------------------------------------------------------- reading the run
def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's records, each checked for what the report reads; RunError naming the
    file and line of anything else. A torn last line (a kill while writing) is dropped."""
    if not path.is_file():
        raise RunError(f"{path} does not exist or is not a file; is {path.parent} a run folder "
                       "made by `lstmkit train ... --out DIR`?")
    if path.stat().st_size > MAX_METRICS_BYTES:
        raise RunError(f"{path} holds {path.stat().st_size:,} bytes, more than a run writes "
                       f"({MAX_METRICS_BYTES:,} at most); the file is damaged")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise RunError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); the file is "
                       "damaged") from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as e:
            if n == len(lines):
                break                              # torn by a kill: the trainer drops it too
            raise RunError(f"{path}, line {n}: not JSON ({str(e)[:80]}); the file is "
                           "damaged") from None
        problem = _record_problem(record)
        if problem:
            raise RunError(f"{path}, line {n}: {problem}; the file is damaged")
        records.append(record)
    return records


def _record_problem(record) -> str:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if not isinstance(record.get("step"), int) or isinstance(record.get("step"), bool) \
            or record["step"] < 0:
        return "expected a step (a whole number >= 0)"
    for key in ("train_loss", "lr", "train_seconds"):
        if key in record and not _number(record[key]):
            return f"{key} is not a number"
    for key in ("valid", "test"):
        if key in record and (not isinstance(record[key], dict)
                              or not all(_number(v) for v in record[key].values())):
            return f"{key} is not an object of numbers"
    return ""


def read_results(run: Path) -> dict | None:
    """results.json (written when training finished), or None for an unfinished run."""
    from ..runio import read_json

    path = run / "results.json"
    if not path.exists():
        return None
    results = read_json(path)
    if not isinstance(results, dict):
        raise RunError(f"{path}: expected a JSON object; the file is damaged")
    for key in ("valid", "test"):
        value = results.get(key)
        if value is not None and not (isinstance(value, dict)
                                      and all(_number(v) for v in value.values())):
            raise RunError(f"{path}: {key} is not an object of numbers; the file is damaged")
    for key, ok in (("steps", lambda v: isinstance(v, int) and not isinstance(v, bool)),
                    ("epochs", lambda v: isinstance(v, int) and not isinstance(v, bool)),
                    ("train_seconds", _number), ("stopped", lambda v: isinstance(v, str))):
        if key in results and not ok(results[key]):
            raise RunError(f"{path}: {key} is {type(results[key]).__name__}, not what lstmkit "
                           "writes; the file is damaged")
    return results


def clean(value):
    """value for the page's JSON: NaN and infinities become null (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


# ---------------------------------------------------------------------- what was trained
def _seconds(s) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d} (min:s)"


def _count(n, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _data_rows(cfg) -> str:
    m, task = cfg.meta, cfg.task
    if task == "names":
        s = m.get("sizes", {})
        return (f"{len(m['languages'])} languages; names: " +
                ", ".join(f"{k} {v:,}" for k, v in s.items()))
    if task in ("ptb", "chars"):
        unit = "words" if task == "ptb" else "characters"
        return (f"{cfg.path or ('Penn Treebank' if task == 'ptb' else 'Tiny Shakespeare')}; "
                f"vocabulary {len(m['vocab']):,}; {unit}: " +
                ", ".join(f"{k} {v:,}" for k, v in m.get("tokens", {}).items()))
    if task == "forecast":
        return (f"{m.get('name', 'series')} ({cfg.path or 'airline passengers'}); points: " +
                ", ".join(f"{k} {v:,}" for k, v in m.get("points", {}).items()) +
                f"; window {cfg.window}, difference {cfg.difference}")
    if task == "jsb":
        return "chorales: " + ", ".join(f"{k} {v:,}" for k, v in m.get("chorales", {}).items())
    return (f"T = {cfg.length}; fresh batches of {cfg.batch_size} at every step "
            f"({cfg.steps_per_epoch} an epoch); a fixed test set of 1,000 sequences")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def trained(cfg, model, run: Path, results: dict | None) -> list[tuple[str, str]]:
    """(label, value) rows of the "what was trained" table."""
    cell = registry.get(cfg.cell)
    rnn = model.rnn
    params = sum(p.numel() for p in model.parameters())
    rows = [("task", f"{cfg.task}: {DESCRIPTIONS.get(cfg.task, '')}"),
            ("cell", f"{cfg.cell}" + (f" ({cell.summary})" if cell.summary else "")),
            ("recurrent layers", f"{rnn.num_layers} x {rnn.hidden_size} units" +
             (", bidirectional" if rnn.bidirectional else "") +
             (f"; embeddings of {cfg.embed}" if cfg.task in ("names", "ptb", "chars", "copy")
              else "") + (f"; dropout {cfg.dropout:g}" if cfg.dropout else "")),
            ("parameters", f"{params:,}"),
            ("engine", cfg.engine),
            ("optimisation", f"{cfg.optimizer}, lr {cfg.lr:g}" +
             (f" x {cfg.lr_decay:g} per epoch after {cfg.decay_after}"
              if cfg.lr_decay != 1 else "") +
             f", batch {cfg.batch_size}, gradient norm clipped at {cfg.clip:g}, "
             f"{_count(cfg.epochs, 'epoch')} at most, seed {cfg.seed}" +
             (", bfloat16" if cfg.bf16 else "")),
            ("data", _data_rows(cfg))]
    if results:
        rows.append(("training", f"{_count(results.get('steps', 0), 'step')}, "
                     f"{_count(results.get('epochs', 0), 'epoch')}, "
                     f"{_seconds(results.get('train_seconds', 0))} of training; "
                     f"{results.get('stopped', '')}"))
        when = time.localtime((run / "results.json").stat().st_mtime)
        rows.append(("finished", time.strftime("%Y-%m-%d %H:%M", when)))
    else:
        rows.append(("training", "not finished (no results.json): the metrics below are the "
                     "last ones recorded"))
    threads = cfg.threads or "torch's default"
    rows.append(("device", f"CPU (lstmkit trains on the CPU), torch threads: {threads}; this "
                 f"report made on {cpu_name()}, torch {torch.__version__}, lstmkit "
                 f"{__version__}"))
    rows.append(("run folder", str(run.resolve())))
    return rows


# ---------------------------------------------------------------------- curves
def _series(records, key, sub=None) -> tuple[list, list]:
    pts = [(r["step"], (r[key][sub] if sub else r[key])) for r in records
           if key in r and not r.get("final") and (sub is None or sub in r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def curves(cfg, records: list[dict]) -> list[dict]:
    """The training-loss and validation charts."""
    task, units = cfg.task, LOSS_UNITS.get(cfg.task, "loss")
    tx, ty = _series(records, "train_loss")
    vx, vy = _series(records, "valid", "loss")
    step = {"label": "optimiser step"}
    note = "" if tx else "Training loss is recorded every 50 steps; this run had fewer."
    if task == "forecast":
        charts = [{"title": "Training loss (mean over the last 50 steps)", "x": step,
                   "y": {"label": units}, "series": [{"name": "training", "x": tx, "y": ty}],
                   "note": note},
                  {"title": "Validation loss", "x": step,
                   "y": {"label": "MSE of log values" if cfg.meta.get("transform", {}).get("log")
                         else "MSE of values"},
                   "series": [{"name": "validation", "x": vx, "y": vy}]}]
    else:
        charts = [{"title": "Training and validation loss", "x": step, "y": {"label": units},
                   "series": [{"name": "training (mean since the epoch began)", "x": tx,
                               "y": ty},
                              {"name": "validation (each epoch)", "x": vx, "y": vy,
                               "points": True}], "note": note}]
    charts += validation_charts(cfg, records)
    return charts


def _hlines(cfg, metric: str, split: str) -> list[dict]:
    """The anchors of a metric and split for this run's kind of layer, as reference levels."""
    layer = registry.get(cfg.cell).layer
    return [{"name": f"{a.source}: {a.value:.4g}", "y": a.value, "kind": "hline"}
            for a in anchors_for(cfg.task) if a.metric == metric and a.split == split
            and (a.cell is None or a.cell == layer)]


def validation_charts(cfg, records) -> list[dict]:
    task, step = cfg.task, {"label": "optimiser step"}

    def chart(title, key, label, extra=(), log=False, name=None):
        x, y = _series(records, "valid", key)
        return {"title": title, "x": step, "y": {"label": label, "log": log},
                "series": [{"name": name or f"validation {key}", "x": x, "y": y,
                            "points": True}, *extra]}

    if task == "names":
        x, y = _series(records, "valid", "macro_accuracy")
        return [chart("Validation accuracy", "accuracy", "accuracy (fraction of names)",
                      [{"name": "macro-averaged accuracy", "x": x, "y": y, "points": True}],
                      name="accuracy")]
    if task == "ptb":
        return [chart("Validation perplexity", "perplexity", "perplexity (words)",
                      _hlines(cfg, "perplexity", "valid"), name="perplexity")]
    if task == "chars":
        return [chart("Validation bits per character", "bits_per_token", "bits per character",
                      name="bits per character")]
    if task == "forecast":
        last = next((r["valid"] for r in reversed(records) if "valid" in r), {})
        refs = [{"name": f"{label} on the validation points: {last[k]:.2f}%", "y": last[k],
                 "kind": "hline"} for k, label in (("mape_mean_change", "mean change"),
                                                  ("mape_seasonal_naive", "seasonal naive"))
                if k in last]
        return [chart("Validation MAPE of the forecast", "mape", "MAPE, %", refs,
                      name="forecast MAPE")]
    return []


# ---------------------------------------------------------------------- final metrics
def final_metrics(cfg, results, records) -> dict:
    """Rows metric | validation | test | anchors, and the anchors' notes."""
    valid = results.get("valid") if results else None
    test = results.get("test") if results else None
    if valid is None:
        valid = next((r["valid"] for r in reversed(records) if "valid" in r), None)
    layer = registry.get(cfg.cell).layer
    rows = []
    def show(m, key, fmt):
        value = m.get(key) if m else None
        return format(value, fmt) if value is not None and math.isfinite(value) else "-"

    for key, (label, fmt) in METRICS.get(cfg.task, {}).items():
        refs = [f"{a.source} ({a.split}): {a.value:.4g}" + (
                " <- this run's kind of layer" if a.cell == layer and a.kind == "published"
                else "") for a in anchors_for(cfg.task) if a.metric == key]
        if key == "mse" and cfg.task == "adding":
            refs = [f"{a.source}: {a.value:.3g}" for a in anchors_for("adding")]
        rows.append({"metric": label, "valid": show(valid, key, fmt), "test": show(test, key, fmt),
                     "refs": refs})
    chars = "Validation is the 5% of the text after the training text, test the last 5%."
    if not cfg.path:                        # Tiny Shakespeare (RESULTS.md)
        chars += (" Most of Tiny Shakespeare's test text is The Tempest, a play absent from "
                  "the training text: test loss runs 0.1-0.16 above validation.")
    notes = {"chars": chars,
             "adding": "Validation and test both score the same fixed test set of 1,000 "
                       "sequences.",
             "copy": "Validation and test both score the same fixed test set of 1,000 "
                     "sequences."}
    return {"rows": rows, "finished": results is not None, "note": notes.get(cfg.task, "")}


# ---------------------------------------------------------------------- per task
def names_section(task, model) -> dict:
    counts = task.confusion(model)
    tp = counts.diag().double()
    rows = []
    for c, lang in enumerate(task.languages):
        support, predicted = int(counts[c].sum()), int(counts[:, c].sum())
        rows.append({"class": lang, "support": support, "predicted": predicted,
                     "precision": float(tp[c] / predicted) if predicted else None,
                     "recall": float(tp[c] / support) if support else None})
    return {"kind": "names", "classes": task.languages, "counts": counts.tolist(),
            "per_class": rows, "test_names": int(counts.sum())}


def samples_section(task, model) -> dict:
    ptb = task.cfg.task == "ptb"
    valid = task.eval_data["valid"][:, 0]
    prime_ids = valid[:3 if ptb else 40].tolist()
    prime = (" " if ptb else "").join(task.vocab[i] for i in prime_ids)
    samples = []
    for temperature in (0.8, 1.0):
        text = task.sample(model, prime, 60 if ptb else 300, temperature, seed=0)
        samples.append({"temperature": temperature, "prime": prime, "text": text})
    return {"kind": "samples", "samples": samples,
            "command": f"lstmkit sample RUN --prime {json.dumps(prime)} --length "
                       f"{60 if ptb else 300} --temperature T --seed 0"}


def forecast_section(task, model, dates) -> dict:
    values = task.values
    start = task.n_train + task.n_valid
    history = values[:start]
    steps = len(values) - start
    pred = task.forecast(model, history, steps)
    low, high = task.interval(model, history, steps)
    n = len(values)
    labels = dates if dates and len(dates) == n else None
    month = labels is not None and all(re.fullmatch(r"\d{4}-\d{2}", d) for d in labels)
    x_label = "month" if month else ("date" if labels else "time step")
    fx = list(range(start, n))
    chart = {"title": f"{task.series.name}: the test period forecast, each prediction fed back",
             "x": {"label": x_label, "labels": labels},
             "y": {"label": f"{task.series.name} (the series' units)"},
             "series": [{"name": task.series.name + " (observed)", "x": list(range(n)),
                         "y": values.tolist()},
                        {"name": "approx. 95% interval (model-based)", "x": fx,
                         "lo": low.tolist(), "hi": high.tolist(), "kind": "band"},
                        {"name": "forecast", "x": fx, "y": pred.tolist()},
                        {"name": "start of validation", "x0": task.n_train, "kind": "vline"},
                        {"name": "start of test", "x0": start, "kind": "vline"}]}
    return {"kind": "forecast", "chart": chart}


def synthetic_section(cfg, records) -> dict:
    step = {"label": "optimiser step"}
    if cfg.task == "adding":
        x, y = _series(records, "valid", "mse")
        chart = {"title": f"Adding problem, T = {cfg.length}: validation MSE against the "
                          "baseline", "x": step, "y": {"label": "MSE (log scale)", "log": True},
                 "series": [{"name": "validation MSE", "x": x, "y": y, "points": True},
                            {"name": "predicting 1 (baseline): 0.167", "y": 1 / 6,
                             "kind": "hline"},
                            {"name": "solved: 0.01", "y": 0.01, "kind": "hline"}]}
        return {"kind": "charts", "charts": [chart]}
    x, acc = _series(records, "valid", "accuracy")
    _, ce = _series(records, "valid", "loss")
    _, base = _series(records, "valid", "baseline_loss")
    charts = [{"title": f"Copy task, T = {cfg.length}: copied symbols right", "x": step,
               "y": {"label": "accuracy (fraction of copied symbols)"},
               "series": [{"name": "validation accuracy", "x": x, "y": acc, "points": True},
                          {"name": "chance (1/8)", "y": 1 / 8, "kind": "hline"}]},
              {"title": f"Copy task, T = {cfg.length}: cross-entropy against the memoryless "
                        "baseline", "x": step, "y": {"label": "cross-entropy, nats per step"},
               "series": [{"name": "validation cross-entropy", "x": x, "y": ce, "points": True},
                          *([{"name": f"memoryless baseline: {base[-1]:.4f}", "y": base[-1],
                              "kind": "hline"}] if base else [])]}]
    return {"kind": "charts", "charts": charts}


def jsb_section(cfg, records) -> dict:
    x, y = _series(records, "valid", "nll_per_step")
    refs = [{"name": f"{a.source} (test): {a.value:.2f}", "y": a.value, "kind": "hline"}
            for a in anchors_for("jsb") if a.kind == "published"]
    chart = {"title": "JSB Chorales: validation NLL against Chung et al. 2014's test NLL",
             "x": {"label": "optimiser step"}, "y": {"label": "NLL, nats per time step"},
             "series": [{"name": "validation NLL", "x": x, "y": y, "points": True}, *refs]}
    return {"kind": "charts", "charts": [chart]}


def task_section(cfg, task, model, records, dates) -> dict | None:
    if cfg.task == "names":
        return names_section(task, model)
    if cfg.task in ("ptb", "chars"):
        return samples_section(task, model)
    if cfg.task == "forecast":
        return forecast_section(task, model, dates)
    if cfg.task in ("adding", "copy"):
        return synthetic_section(cfg, records)
    if cfg.task == "jsb":
        return jsb_section(cfg, records)
    return None
