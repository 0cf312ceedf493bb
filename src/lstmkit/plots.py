"""Figures, drawn with matplotlib's Agg backend and written as PNG (atomically)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .runio import atomic_write_bytes  # noqa: E402


def save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def loss_curves(records: list[dict], path: str | Path, title: str = "",
                loss: str = "loss") -> Path:
    """Training loss (per logged step) and validation loss (per epoch) against steps; `loss`
    names it on the y axis, e.g. "cross-entropy (nats/char)"."""
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["train_loss"]) for r in records
             if r.get("train_loss") is not None]
    valid = [(r["step"], r["valid"]["loss"]) for r in records if "valid" in r]
    if train:
        ax.plot(*zip(*train), label="train", alpha=0.8)
    if valid:
        ax.plot(*zip(*valid), "o-", label="validation")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(loss)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def confusion_matrix(counts, labels: list[str], path: str | Path,
                     title: str = "Confusion matrix") -> Path:
    """Rows: true class; columns: predicted; each row normalised to fractions."""
    frac = counts.float() / counts.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(frac.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    bar = fig.colorbar(im, ax=ax, fraction=0.046)
    bar.set_label("fraction of the true class (each row sums to 1)")
    return save(fig, path)


def forecast(values, start: int, pred, low, high, path: str | Path, title: str = "",
             x=None, ylabel: str = "value") -> Path:
    """The series, the forecast from index `start` on, and its interval. `x`: where each
    index lies on the x axis (datetimes, len(values) or more), else the index itself."""
    steps = range(start, start + len(pred))
    x = list(range(max(len(values), steps.stop))) if x is None else list(x)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(x[:len(values)], values.numpy(), color="black", label="series")
    ax.plot(x[steps.start:steps.stop], pred.numpy(), color="C1", label="forecast")
    ax.fill_between(x[steps.start:steps.stop], low.numpy(), high.numpy(), color="C1",
                    alpha=0.25, label="approx. 95% interval")
    is_date = not isinstance(x[0], int)
    ax.set_xlabel("date" if is_date else "time step")
    ax.set_ylabel(ylabel)
    if is_date:
        fig.autofmt_xdate()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)   # off the data
    return save(fig, path)


def curves(series: dict[str, list[float]], path: str | Path, xlabel: str, ylabel: str,
           title: str = "", log_y: bool = False, x=None) -> Path:
    """One line per named series (e.g. gradient norm against steps back, one per cell)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ys in series.items():
        ax.plot(x if x is not None else range(len(ys)), ys, label=name)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)
