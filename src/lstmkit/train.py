"""One trainer for every task: read it top to bottom.

    train(cfg, out_dir)        start a run in out_dir (a new folder, or an empty one)
    train(cfg, out_dir, resume=True)   continue it from its last checkpoint

A run folder holds config.json, metrics.jsonl (one JSON record per log line),
model.safetensors (the best model by the task's validation score), checkpoint/ (model,
optimiser, schedule, random-number states and the position in the data, at each epoch end and
every --checkpoint-every steps), results.json and PNG plots. A resumed run reaches the same weights as one never stopped.

Denormal numbers: while training, torch.set_flush_denormal(True) is on unless
cfg.keep_denormals (a shrinking gradient otherwise slows recurrent backward passes several
times over; see BENCHMARKS.md); the setting returns to torch's default (off) afterwards.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import plots
from .config import Config
from .runio import (
    RunError,
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    load_state_into,
    optimizer_from_files,
    optimizer_to_files,
    read_tensors,
    save_checkpoint,
)
from .tasks import Task, make_task

LOG_EVERY = 50                       # optimiser steps between train-loss records


class TrainingStopped(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


@dataclass
class TrainState:
    """Where a run is: everything besides tensors that a checkpoint restores."""

    epoch: int = 0                   # epochs completed
    batch_in_epoch: int = 0          # batches of the current epoch already trained on
    step: int = 0                    # optimiser steps so far
    lr_scale: float = 1.0            # plateau halvings
    best_valid: float = math.inf
    best_metrics: dict = field(default_factory=dict)
    bad_epochs: int = 0              # epochs since validation last improved
    train_seconds: float = 0.0
    python_random: list = field(default_factory=list)


# ---------------------------------------------------------------------- progress
class Progress:
    """A one-line progress bar on a terminal; plain lines now and then otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0

    def update(self, epoch: int, epochs: int, done: int, total: int | None, loss: float,
               rate: float) -> None:
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 30.0) and done != total:
            return
        self.last = now
        frac = f" {done}/{total} {100 * done / total:3.0f}%" if total else f" {done}"
        eta = f"  ETA {format_seconds((total - done) / rate)}" if total and rate > 0 else ""
        line = (f"epoch {epoch + 1}/{epochs}{frac}  loss {loss:.4f}  {rate:.1f} steps/s{eta}")
        if self.tty:
            self.stream.write("\r" + line.ljust(78))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def format_seconds(s: float) -> str:
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


# ---------------------------------------------------------------------- setup
def initialise(model: nn.Module, cfg: Config) -> None:
    if cfg.init_scale > 0:                      # Zaremba et al.: every parameter ~ U(-s, s)
        for p in model.parameters():
            nn.init.uniform_(p, -cfg.init_scale, cfg.init_scale)
    if cfg.init != "default":
        from . import init as inits
        fn = {"unit-forget": inits.unit_forget_bias_, "orthogonal": inits.orthogonal_recurrent_,
              "chrono": lambda m: inits.chrono_init_(m, max(cfg.length, 2))}.get(cfg.init)
        if fn is None:
            raise ValueError(f"unknown init {cfg.init!r}; expected default, unit-forget, "
                             "chrono or orthogonal")
        fn(model.rnn)


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected adam or sgd")


def epoch_lr(cfg: Config, epoch: int, st: TrainState) -> float:
    """lr * lr_decay^max(0, epoch + 1 - decay_after), times the plateau halvings."""
    return cfg.lr * cfg.lr_decay ** max(0, epoch + 1 - cfg.decay_after) * st.lr_scale


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's records; a torn last line (a kill while writing) is dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def append_metrics(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------- checkpoints
def checkpoint(out: Path, model, optimizer, task: Task, st: TrainState, carry) -> None:
    st.python_random = list(random.getstate()[1])
    opt_tensors, opt_meta = optimizer_to_files(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    tensors.update(task.carry_tensors(carry))
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": st.__dict__, "optimizer": opt_meta}
    save_checkpoint(out, st.step, tensors, meta)


def restore(out: Path, model, optimizer, task: Task):
    tensors, meta = load_checkpoint(out)
    model_tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_into(model, model_tensors, out / "checkpoint")
    optimizer_from_files(optimizer, tensors, meta["optimizer"])
    torch.set_rng_state(tensors["rng.torch"])
    st = TrainState(**meta["state"])
    random.setstate((3, tuple(st.python_random), None))
    return st, task.carry_from_tensors(tensors)


# ---------------------------------------------------------------------- the loop
def train(cfg: Config, out_dir: str | Path, resume: bool = False, log=print) -> dict:
    """Train cfg's task into out_dir; returns the final results (also in results.json)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file; give a folder for the run")
    if not resume and (out / "config.json").exists():
        raise RunError(f"{out} already holds a run; pass --resume to continue it, or choose "
                       "another --out")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    task = make_task(cfg)                                   # loads the data, fills cfg.meta
    model = task.build_model()
    initialise(model, cfg)
    optimizer = make_optimizer(model, cfg)
    metrics_path = out / "metrics.jsonl"
    st, carry = TrainState(), None
    if resume:
        st, carry = restore(out, model, optimizer, task)
        kept = [r for r in read_metrics(metrics_path) if r.get("step", 0) <= st.step
                and not r.get("final")]
        atomic_write_bytes(metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        log(f"resumed {out} at epoch {st.epoch + 1}, step {st.step}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", cfg.to_json())
        atomic_write_bytes(metrics_path, b"")

    torch.set_flush_denormal(not cfg.keep_denormals)
    try:
        stopped = run_epochs(cfg, out, task, model, optimizer, st, carry, log)
    finally:
        torch.set_flush_denormal(False)
    return finish(cfg, out, task, model, st, stopped, log)


def run_epochs(cfg, out, task, model, optimizer, st: TrainState, carry, log) -> str:
    """Train until the epochs, the step budget or the time limit run out, or validation stops
    improving; returns why it stopped."""
    progress = Progress()
    total = task.batches_per_epoch()
    for epoch in range(st.epoch, cfg.epochs):
        lr = epoch_lr(cfg, epoch, st)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        model.train()
        started = counted = time.monotonic()          # rate; train_seconds counted up to
        running, count, reason = 0.0, 0, ""
        for i, batch in enumerate(task.train_batches(generator)):
            if i < st.batch_in_epoch:                       # resumed inside this epoch
                continue
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss, carry = task.train_step(model, batch, carry)
            if not torch.isfinite(loss):
                raise TrainingStopped(f"the loss became {loss.item()} at step {st.step + 1}; "
                                      f"stopping (last good checkpoint in {out}/checkpoint); "
                                      "a lower --lr or --clip may help")
            optimizer.zero_grad(set_to_none=True)
            (loss * task.loss_weight(batch)).backward()
            if cfg.clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            st.step += 1
            st.batch_in_epoch = i + 1
            running += loss.item()
            count += 1
            now = time.monotonic()
            progress.update(epoch, cfg.epochs, i + 1, total, running / count,
                            count / (now - started))
            if st.step % LOG_EVERY == 0:
                append_metrics(out / "metrics.jsonl", {"step": st.step, "epoch": epoch + 1,
                                                       "train_loss": running / count, "lr": lr})
            if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                st.train_seconds += now - counted
                checkpoint(out, model, optimizer, task, st, carry)
                counted = time.monotonic()
            if cfg.max_steps and st.step >= cfg.max_steps:
                reason = f"reached --max-steps {cfg.max_steps}"
            if cfg.time_limit and st.train_seconds + now - counted >= 60 * cfg.time_limit:
                reason = f"reached --time-limit {cfg.time_limit:g} min"
            if reason:
                break
        progress.close()
        st.train_seconds += time.monotonic() - counted
        if not reason:
            st.epoch, st.batch_in_epoch, carry = epoch + 1, 0, None
        valid = task.evaluate(model, "valid")
        append_metrics(out / "metrics.jsonl", {"step": st.step, "epoch": epoch + 1, "lr": lr,
                                               "valid": valid, "train_seconds": st.train_seconds})
        score = task.selection_score(valid)
        improved = score < st.best_valid
        if improved:
            st.best_valid, st.best_metrics, st.bad_epochs = score, valid, 0
            atomic_save_tensors(out / "model.safetensors", model.state_dict())
        else:
            st.bad_epochs += 1
            if cfg.plateau:
                st.lr_scale *= 0.5
        log(f"epoch {epoch + 1}/{cfg.epochs}  step {st.step}  lr {lr:.3g}  "
            f"valid {task.describe(valid)}{'' if improved else '  (no improvement)'}  "
            f"[{format_seconds(st.train_seconds)} training]")
        checkpoint(out, model, optimizer, task, st, carry)
        if reason:
            return reason
        if cfg.patience and st.bad_epochs >= cfg.patience:
            return f"no improvement for {cfg.patience} epochs"
    return f"completed {cfg.epochs} epochs"


def finish(cfg, out: Path, task: Task, model, st: TrainState, stopped: str, log) -> dict:
    """Evaluate the best model on the test split, write results.json and the plots."""
    load_state_into(model, read_tensors(out / "model.safetensors"), out / "model.safetensors")
    test = task.evaluate(model, "test")
    results = {"task": cfg.task, "stopped": stopped, "steps": st.step, "epochs": st.epoch,
               "train_seconds": round(st.train_seconds, 1), "valid": st.best_metrics,
               "test": test}
    append_metrics(out / "metrics.jsonl", {"step": st.step, "final": True, "test": test})
    task.figures(model, out)
    atomic_write_json(out / "config.json", cfg.to_json())       # figures may add to meta
    plots.loss_curves(read_metrics(out / "metrics.jsonl"), out / "loss.png",
                      title=f"{cfg.task}, {cfg.cell}")
    atomic_write_json(out / "results.json", results)
    log(f"{stopped}; best model by validation: test {task.describe(test)}")
    return results
