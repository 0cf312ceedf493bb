"""One trainer for every task: read it top to bottom.

    train(cfg, out_dir)        start a run in out_dir (a new folder, or an empty one)
    train(cfg, out_dir, resume=True)   continue it from its last checkpoint

A run folder holds config.json, metrics.jsonl (one JSON record per log line),
model.safetensors (the best model by the task's validation score), checkpoint/ (model,
optimiser, schedule, random-number states and the position in the data, at each epoch end and
every --checkpoint-every steps), results.json and PNG plots. A resumed run reaches the same
weights as one never stopped. A step whose loss or gradient is not finite is skipped and counted
(the run stops after cfg.max_nonfinite in a row); SIGINT or SIGTERM checkpoints and stops.

Memory: the trainer asks glibc to keep freed memory for reuse (lstmkit.runtime).

Denormal numbers: while training, torch.set_flush_denormal(True) is on unless
cfg.keep_denormals (a shrinking gradient otherwise slows recurrent backward passes several
times over; see BENCHMARKS.md); the setting returns to torch's default (off) afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed, plots
from .config import INITS, Config
from .runio import (
    RunError,
    TrainState,
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_json,
    load_intact_checkpoint,
    load_state_into,
    optimizer_from_files,
    optimizer_to_files,
    read_tensors,
    save_checkpoint,
)
from .runtime import keep_freed_memory
from .tasks import Task, make_task

LOG_EVERY = 50                       # optimiser steps between train-loss records
NONFINITE_CAUSES = "inputs out of range, or a learning rate too high (try a lower --lr or --clip)"


class TrainingStopped(RuntimeError):
    """Training cannot go on (non-finite losses or validation); the last good checkpoint is
    kept, or, when there was none yet, the run folder is removed (nothing to resume)."""


# ---------------------------------------------------------------------- progress
class Progress:
    """An epoch's progress bar, drawn by tqdm: redrawn in place on a terminal, a widget in a
    notebook (tqdm.auto). In a pipe or a CI log, where a bar redrawn with carriage returns
    piles up into one endless line, it writes a plain line at most every LOG_SECONDS instead
    (and nothing for an epoch shorter than that: the epoch's summary line follows anyway)."""

    LOG_SECONDS = 30.0

    def __init__(self, epoch: int, epochs: int, total: int | None, done: int = 0,
                 stream=None, enabled: bool = True):
        from tqdm.auto import tqdm

        stream = stream or sys.stderr
        tty = hasattr(stream, "isatty") and stream.isatty()
        quiet = dict(mininterval=self.LOG_SECONDS, delay=self.LOG_SECONDS)
        self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{epochs}",
                        unit="step", disable=not enabled, dynamic_ncols=True, leave=False,
                        file=stream if tty else _Lines(stream), **({} if tty else quiet))

    def update(self, loss: float | None) -> None:
        """One more step; loss is the epoch's mean training loss so far (None before any
        step had a finite one)."""
        self.bar.set_postfix_str("loss n/a" if loss is None else f"loss {loss:.4f}",
                                 refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class _Lines(io.TextIOBase):
    """A stream for tqdm that cannot redraw (a pipe, a file): each status it draws becomes
    one line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
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
        fns = {"unit-forget": inits.unit_forget_bias_, "orthogonal": inits.orthogonal_recurrent_,
               "chrono": lambda m: inits.chrono_init_(m, max(cfg.length, 2))}
        for part in cfg.init.split("+"):
            if part not in fns:
                raise ValueError(f"unknown init {cfg.init!r}; expected one of "
                                 f"{', '.join(INITS)}")
            fns[part](model.rnn)


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


def append_metrics(path: Path, record: dict, st: TrainState | None = None) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if st is not None:
        st.records += 1


# ---------------------------------------------------------------------- checkpoints
def checkpoint(out: Path, model, optimizer, carry_tensors: dict, st: TrainState) -> None:
    st.python_random = list(random.getstate()[1])
    opt_tensors, opt_meta = optimizer_to_files(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    tensors.update(carry_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": st.__dict__, "optimizer": opt_meta}
    save_checkpoint(out, st.step, tensors, meta)


def restore(out: Path, model, optimizer, task: Task, log=print):
    tensors, meta, note = load_intact_checkpoint(out)
    if note:
        log(note)
    model_tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_into(model, model_tensors, out / "checkpoint")
    optimizer_from_files(optimizer, tensors, meta["optimizer"])
    torch.set_rng_state(tensors["rng.torch"])
    st = TrainState(**meta["state"])
    random.setstate((3, tuple(st.python_random), None))
    return st, task.carry_from_tensors(tensors)


def gradient_norm(params: list, clip: float) -> float:
    """The gradients' total 2-norm, after clipping it to `clip` when clip > 0."""
    if clip > 0:
        return float(nn.utils.clip_grad_norm_(params, clip))
    return float(nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))


@contextlib.contextmanager
def weight_noise(params: list, std: float):
    """Inside: every parameter w is w + e, e ~ N(0, std^2) drawn afresh (Graves 2011), so that a
    backward pass there takes the gradient at the noisy weights; on exit w exactly as before."""
    if not std:
        yield
        return
    with torch.no_grad():
        clean = [p.detach().clone() for p in params]
        for p in params:
            p.add_(torch.randn_like(p) * std)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, w in zip(params, clean):
                p.copy_(w)


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run after a checkpoint."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step


class SignalStop:
    """While active, the first SIGINT / SIGTERM only sets .signal (the loop then checkpoints and
    stops at the end of the step); a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal, self._old = 0, {}

    def _handle(self, signum, frame):
        if self.signal:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------------- the loop
def train(cfg: Config, out_dir: str | Path, resume: bool = False, log=print) -> dict:
    """Train cfg's task into out_dir; returns the final results (also in results.json).
    Under torchrun, one rank of a data-parallel run (lstmkit.distributed)."""
    group = distributed.setup()
    try:
        results = _train(cfg, Path(out_dir), resume, log if group.main else _quiet, group)
        distributed.barrier(group)     # leave together: no rank tears down while a peer works
        return results
    finally:
        distributed.teardown(group)


def _quiet(message: str) -> None:
    pass


def _train(cfg: Config, out: Path, resume: bool, log, group: distributed.Group) -> dict:
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file; give a folder for the run")
    fresh_after_kill = resume and not (out / "checkpoint" / "latest.json").exists()
    if fresh_after_kill:
        log(f"{out} has no checkpoint yet (stopped before the first one); starting it afresh")
        resume = False
    elif not resume and (out / "config.json").exists():
        raise RunError(f"{out} already holds a run; pass --resume to continue it, or choose "
                       "another --out")
    if group.active and cfg.batch_size % group.world:
        raise ValueError(f"--batch-size {cfg.batch_size} does not split evenly over "
                         f"{group.world} processes")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    keep_freed_memory()                 # no page faults for the same buffers every step
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    task = make_task(cfg)                                   # loads the data, fills cfg.meta
    model = task.build_model()
    initialise(model, cfg)
    log(start_line(cfg, task, model, group))
    optimizer = make_optimizer(model, cfg)
    metrics_path = out / "metrics.jsonl"
    st, carry, created = TrainState(), None, False
    if resume:
        st, carry = restore(out, model, optimizer, task, log)
        if group.active and carry is not None:
            carry = task.carry_from_tensors(distributed.shard_tensors(
                task.carry_tensors(carry), task.carry_dim, group))
        distributed.barrier(group)                  # every rank has read before rank 0 writes
        if group.main:
            kept = read_metrics(metrics_path)[:st.records]     # those the checkpoint knew
            atomic_write_bytes(metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        log(f"resumed {out} at epoch {st.epoch + 1}, step {st.step}")
    else:
        distributed.barrier(group)      # every rank has found no run in out before rank 0 writes
        if group.main:
            created = not out.exists()
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "config.json", cfg.to_json())
            atomic_write_bytes(metrics_path, b"")
    if group.active:
        log(f"data parallel over {group.world} processes: {cfg.batch_size // group.world} of "
            f"each batch of {cfg.batch_size} per process")

    torch.set_flush_denormal(not cfg.keep_denormals)
    try:
        with SignalStop() as stop:
            run = Run(cfg, out, task, model, optimizer, st, log, group, stop)
            stopped = run.epochs(carry)
    except TrainingStopped as e:
        if (out / "checkpoint" / "latest.json").exists():
            raise TrainingStopped(f"{e}. The last good checkpoint is kept in "
                                  f"{out / 'checkpoint'}") from None
        if group.main and not resume:           # nothing to resume: leave no half a run
            discard_run(out, created)
        raise TrainingStopped(f"{e}. No checkpoint had been written, so nothing was kept "
                              f"({out} {'removed' if created else 'emptied'})") from None
    finally:
        torch.set_flush_denormal(False)
    if not group.main:
        return {}
    return finish(cfg, out, task, model, st, stopped, log)


def start_line(cfg: Config, task: Task, model: nn.Module, group: distributed.Group) -> str:
    """What is about to train, on what, where: one line."""
    params = sum(p.numel() for p in model.parameters())
    device = next(model.parameters()).device.type
    where = f"{device}, {torch.get_num_threads()} threads" + \
        (f" in each of {group.world} processes" if group.active else "")
    data = " from ".join(part for part in (task.data_sizes(), task.data_source()) if part)
    return (f"train {cfg.task}: cell {cfg.cell}, engine {cfg.engine}, {params:,} parameters; "
            f"data {data}; device {where}")


def discard_run(out: Path, created: bool) -> None:
    """Remove what a run that stopped before its first checkpoint wrote (the folder too, when
    this run made it), so that later commands do not mistake it for a run."""
    for name in ("config.json", "metrics.jsonl", "model.safetensors"):
        (out / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):          # kept if anything else is in it
        (out / "checkpoint").rmdir()
    if created:
        with contextlib.suppress(OSError):
            out.rmdir()


class Run:
    """The training loop of one process; in a data-parallel run every rank runs it in step."""

    def __init__(self, cfg, out, task, model, optimizer, st, log, group, stop):
        self.cfg, self.out, self.task, self.model, self.optimizer = cfg, out, task, model, \
            optimizer
        self.st, self.log, self.group, self.stop = st, log, group, stop
        # the module that trains: wrapped so that backward averages gradients over ranks
        self.net = DistributedDataParallel(model) if group.active else model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.first_nonfinite = 0                     # the step of the first, in this process

    def epochs(self, carry) -> str:
        """Train until the epochs, the step budget or the time limit run out, or validation
        stops improving; returns why it stopped. SIGINT / SIGTERM: checkpoint, then raise
        Interrupted."""
        cfg, st = self.cfg, self.st
        for epoch in range(st.epoch, cfg.epochs):
            reason, carry = self.epoch(epoch, carry)
            if self.end_of_epoch(epoch, reason, carry):
                return reason or f"no improvement for {cfg.patience} epochs"
        return f"completed {cfg.epochs} epochs"

    def epoch(self, epoch: int, carry):
        cfg, st, task, group = self.cfg, self.st, self.task, self.group
        lr = epoch_lr(cfg, epoch, st)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.lr = lr
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        self.model.train()
        reason, first = "", st.batch_in_epoch
        progress = Progress(epoch, cfg.epochs, task.batches_per_epoch(), first,
                            enabled=group.main)
        self.counted = time.monotonic()              # train_seconds are counted up to here
        if first == 0:
            st.loss_sum, st.loss_count = 0.0, 0
        for i, batch in enumerate(task.train_batches(generator)):
            if i < st.batch_in_epoch:                       # resumed inside this epoch
                continue
            if group.active:
                if distributed.batch_rows(batch, task.batch_dims) < group.world:
                    st.batch_in_epoch = i + 1               # too small to split: left out
                    continue
                batch = distributed.shard(batch, task.batch_dims, group)
            carry = self.step(batch, carry, epoch)
            st.batch_in_epoch = i + 1
            now = time.monotonic()
            train_loss = st.loss_sum / st.loss_count if st.loss_count else None   # None: no
            progress.update(train_loss)                                 # finite step yet
            if st.step % LOG_EVERY == 0:
                self.record({"step": st.step, "epoch": epoch + 1, "train_loss": train_loss,
                             "lr": lr, "skipped": st.skipped})
            time_up = bool(cfg.time_limit) and \
                st.train_seconds + now - self.counted >= 60 * cfg.time_limit
            signalled = bool(self.stop.signal)
            if group.active:                         # every rank stops at the same step
                time_up, signalled = distributed.any_rank([time_up, signalled], group)
            if signalled:
                st.train_seconds += time.monotonic() - self.counted
                self.checkpoint(carry)
                raise Interrupted(self.stop.signal or signal.SIGTERM, st.step)
            if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                st.train_seconds += now - self.counted
                self.checkpoint(carry)
                self.counted = time.monotonic()
            if cfg.max_steps and st.step >= cfg.max_steps:
                reason = f"reached --max-steps {cfg.max_steps}"
            if time_up:
                reason = f"reached --time-limit {cfg.time_limit:g} min"
            if reason:
                break
        progress.close()
        st.train_seconds += time.monotonic() - self.counted
        if not reason:
            st.epoch, st.batch_in_epoch, carry = epoch + 1, 0, None
        return reason, carry

    def step(self, batch, carry, epoch: int):
        """One optimiser step on a batch (this rank's slice of it); returns the new carry."""
        cfg, st, task, group = self.cfg, self.st, self.task, self.group
        with weight_noise(self.params, cfg.weight_noise):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss, carry = task.train_step(self.net, batch, carry)
            self.optimizer.zero_grad(set_to_none=True)
            value, share = loss.item(), 1.0
            if group.active:
                # the global mean loss, and this rank's share of it: DDP averages the gradients
                # of share * local mean over ranks, which is the gradient of the global mean
                units = task.batch_units(batch)
                total, all_units = distributed.all_sum([value * units, units], group)
                value, share = total / all_units, units * group.world / all_units
            norm = math.nan
            if math.isfinite(value):
                (loss * (task.loss_weight(batch) * share)).backward()
                norm = gradient_norm(self.params, cfg.clip)
        st.step += 1
        if math.isfinite(norm):
            self.optimizer.step()
            st.bad_in_row = 0
            st.loss_sum += value
            st.loss_count += 1
            return carry
        self.optimizer.zero_grad(set_to_none=True)     # skip the update, count it, maybe stop
        st.skipped += 1
        st.bad_in_row += 1
        what = "gradient" if math.isfinite(value) else "loss"
        self.first_nonfinite = self.first_nonfinite or st.step
        self.log(f"step {st.step}: non-finite {what}; update skipped ({st.skipped} so far)")
        if st.bad_in_row >= cfg.max_nonfinite:
            raise TrainingStopped(
                f"stopped: {st.bad_in_row} steps in a row had a non-finite loss or gradient "
                f"(the first at step {self.first_nonfinite}, the last at step {st.step}): "
                f"{NONFINITE_CAUSES}")
        return None                                    # a non-finite state is not carried on

    def end_of_epoch(self, epoch: int, reason: str, carry) -> bool:
        """Validate, keep the best model, checkpoint; True if training should stop."""
        cfg, st, task = self.cfg, self.st, self.task
        if st.loss_count == 0 and st.bad_in_row:     # the epoch trained on nothing
            raise TrainingStopped(f"stopped: every step of epoch {epoch + 1} had a non-finite "
                                  f"loss or gradient (the first at step "
                                  f"{self.first_nonfinite or st.step}): {NONFINITE_CAUSES}")
        valid = task.evaluate(self.model, "valid")   # every rank: the same weights, same numbers
        if not math.isfinite(valid["loss"]):         # no model worth keeping comes of this
            skipped = (f"; {st.skipped} of {st.step} steps had a non-finite loss or gradient"
                       if st.skipped else "")
            raise TrainingStopped(f"stopped: the validation loss after epoch {epoch + 1} is "
                                  f"not finite{skipped}: {NONFINITE_CAUSES}")
        self.record({"step": st.step, "epoch": epoch + 1, "lr": self.lr, "valid": valid,
                     "train_seconds": st.train_seconds})
        score = task.selection_score(valid)
        improved = score < st.best_valid
        if improved:
            st.best_valid, st.best_metrics, st.bad_epochs = score, valid, 0
            if self.group.main:
                atomic_save_tensors(self.out / "model.safetensors", self.model.state_dict())
        else:
            st.bad_epochs += 1
            if cfg.plateau:
                st.lr_scale *= 0.5
        self.log(f"epoch {epoch + 1}/{cfg.epochs}  step {st.step}  lr {self.lr:.3g}  "
                 f"valid {task.describe(valid)}{'' if improved else '  (no improvement)'}  "
                 f"[{format_seconds(st.train_seconds)} training]")
        self.checkpoint(carry)
        signalled = bool(self.stop.signal)
        if self.group.active:
            signalled = distributed.any_rank([signalled], self.group)[0]
        if signalled:
            raise Interrupted(self.stop.signal or signal.SIGTERM, st.step)
        return bool(reason) or bool(cfg.patience and st.bad_epochs >= cfg.patience)

    def record(self, record: dict) -> None:
        if self.group.main:
            append_metrics(self.out / "metrics.jsonl", record, self.st)

    def checkpoint(self, carry) -> None:
        carry_tensors = self.task.carry_tensors(carry)
        if self.group.active and carry_tensors:                 # every rank's streams
            carry_tensors = distributed.gather_rows(carry_tensors, self.task.carry_dim,
                                                    self.group)
        if self.group.main:
            checkpoint(self.out, self.model, self.optimizer, carry_tensors, self.st)


def finish(cfg, out: Path, task: Task, model, st: TrainState, stopped: str, log) -> dict:
    """Evaluate the best model on the test split, write results.json and the plots."""
    load_state_into(model, read_tensors(out / "model.safetensors"), out / "model.safetensors")
    test = task.evaluate(model, "test")
    results = {"task": cfg.task, "stopped": stopped, "steps": st.step, "epochs": st.epoch,
               "train_seconds": round(st.train_seconds, 1), "skipped_steps": st.skipped,
               "valid": st.best_metrics, "test": test}
    append_metrics(out / "metrics.jsonl", {"step": st.step, "final": True, "test": test})
    task.figures(model, out)
    atomic_write_json(out / "config.json", cfg.to_json())       # figures may add to meta
    plots.loss_curves(read_metrics(out / "metrics.jsonl"), out / "loss.png",
                      title=f"{cfg.task}, {cfg.cell}", loss=task.loss_label)
    atomic_write_json(out / "results.json", results)
    log(f"{stopped}; best model by validation: test {task.describe(test)}")
    return results
