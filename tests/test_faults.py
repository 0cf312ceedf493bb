"""Runs that survive faults: non-finite steps are skipped and counted, SIGINT checkpoints and
stops, and a run killed with SIGKILL at random moments resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lstmkit.config import defaults_for
from lstmkit.runio import load_checkpoint
from lstmkit.tasks.synthetic import AddingTask
from lstmkit.train import TrainingStopped, train

SMALL = dict(length=12, hidden=16, steps_per_epoch=10, batch_size=16, epochs=2, threads=1)


class InfiniteGradient(torch.autograd.Function):
    """Passes its input on; its gradient is infinite."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def sabotage(monkeypatch, bad_calls: set[int] | None, kind: str = "loss"):
    """Make AddingTask.train_step return a NaN loss (or an infinite gradient) on the given
    calls (numbered from 1; None = every call from the third on)."""
    original = AddingTask.train_step
    calls = [0]

    def train_step(self, model, batch, carry):
        loss, carry = original(self, model, batch, carry)
        calls[0] += 1
        if (calls[0] in bad_calls) if bad_calls is not None else calls[0] >= 3:
            loss = loss * float("nan") if kind == "loss" else InfiniteGradient.apply(loss)
        return loss, carry

    monkeypatch.setattr(AddingTask, "train_step", train_step)


def config(**overrides):
    cfg = defaults_for("adding")
    for k, v in {**SMALL, **overrides}.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_nonfinite_steps_are_skipped_and_counted(tmp_path, monkeypatch, kind):
    sabotage(monkeypatch, {3, 7, 8}, kind)
    lines = []
    results = train(config(), tmp_path / "run", log=lines.append)
    assert results["skipped_steps"] == 3 and results["steps"] == 20
    assert sum(f"non-finite {kind}" in line for line in lines) == 3
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    records = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")
               if r]
    assert all(torch.isfinite(torch.tensor(r["valid"]["loss"])) for r in records if "valid" in r)


def test_too_many_in_a_row_stop_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    sabotage(monkeypatch, None)                       # every step from the third on
    with pytest.raises(TrainingStopped, match=r"4 steps in a row .* checkpoint"):
        train(config(max_nonfinite=4, checkpoint_every=2), tmp_path / "run", log=lambda m: None)
    tensors, meta = load_checkpoint(tmp_path / "run")
    # the last checkpoint holds the weights from before the trouble: every later step skipped
    assert meta["state"]["skipped"] == meta["state"]["step"] - 2
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))


# ------------------------------------------------------------------ real processes
COMMON = ["--length", 100, "--hidden", 64, "--steps-per-epoch", 40, "--batch-size", 32,
          "--epochs", 5, "--checkpoint-every", 3, "--threads", 1]


def start(out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lstmkit", "train", "adding", "--out", str(out),
                             *map(str, COMMON), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})


def finish(out: Path, *extra) -> None:
    p = start(out, *extra)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stdout + stderr


def final_state(run: Path):
    latest = json.loads((run / "checkpoint" / "latest.json").read_text())["name"]
    tensors = load_file(run / "checkpoint" / f"{latest}.safetensors")
    model = {k: v for k, v in tensors.items() if k.startswith("model.")}
    results = json.loads((run / "results.json").read_text())
    return model, {k: results[k] for k in ("steps", "valid", "test", "skipped_steps")}


def assert_same_run(a: Path, b: Path) -> None:
    (wa, ra), (wb, rb) = final_state(a), final_state(b)
    assert ra == rb
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    lines = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "train_loss" in r]
    assert steps == sorted(set(steps))                 # no record lost or repeated
    reference = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    for r in lines + reference:
        r.pop("train_seconds", None)
    assert lines == reference


def wait_for_records(run: Path, count: int, p: subprocess.Popen, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= count:
            return
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    raise AssertionError("the run wrote no metrics in time")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("faults") / "full"
    finish(run)
    return run


def test_sigint_saves_a_checkpoint_and_says_how_to_resume(tmp_path, uninterrupted):
    run = tmp_path / "run"
    p = start(run)
    wait_for_records(run, 2, p)                        # a train record and an epoch's end
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGINT, stdout + stderr
    assert "Traceback" not in stderr and "--resume" in stderr and "SIGINT" in stderr
    finish(run, "--resume")
    assert_same_run(uninterrupted, run)


def test_sigkill_at_random_moments_then_resume_gives_the_same_run(tmp_path, uninterrupted):
    run = tmp_path / "run"
    rng = random.Random(1234)
    kills = 0
    for _ in range(4):
        # --resume where a run was begun (killed before writing config.json, there is none)
        p = start(run, *(["--resume"] if (run / "config.json").exists() else []))
        time.sleep(rng.uniform(1.0, 4.0))              # startup takes about a second
        if p.poll() is None:
            p.kill()
            kills += 1
        p.communicate(timeout=60)
    finish(run, "--resume")
    assert kills >= 2
    assert_same_run(uninterrupted, run)
