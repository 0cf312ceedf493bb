"""Data-parallel training in 2 processes (torchrun, gloo on the CPU) reaches the weights of one
process training on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

DATA = os.environ.get("LSTMKIT_DATA")


def lstmkit(*args):
    result = subprocess.run([sys.executable, "-m", "lstmkit", *map(str, args)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    latest = json.loads((run / "checkpoint" / "latest.json").read_text())["name"]
    tensors = load_file(run / "checkpoint" / f"{latest}.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def assert_close_weights(a: Path, b: Path, tol=2e-5):
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=tol, atol=tol, msg=k)
    # the weights moved (the validation loss changed from the first epoch's end to the last):
    # the comparison is not between two untouched initialisations
    records = [json.loads(r) for r in (a / "metrics.jsonl").read_text().splitlines()]
    valid = [r["valid"]["loss"] for r in records if "valid" in r]
    assert len(valid) >= 2 and valid[0] != valid[-1], valid


def test_two_processes_match_one_on_the_adding_problem(tmp_path):
    common = ["--length", 12, "--hidden", 16, "--steps-per-epoch", 6, "--batch-size", 16,
              "--epochs", 2, "--dropout", 0]
    one, two = tmp_path / "one", tmp_path / "two"
    lstmkit("train", "adding", "--out", one, "--threads", 1, *common)
    out = lstmkit("train", "adding", "--out", two, "--nproc", 2, *common)
    assert "data parallel over 2 processes" in out.stdout
    assert_close_weights(one, two)
    # rank 0 alone writes: one results file, one metrics record per log point
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((one / "metrics.jsonl").read_text().splitlines())


def test_carried_state_is_split_checkpointed_and_resumed(tmp_path):
    """A character model carries one state per stream; two processes each carry half, the
    checkpoint holds them all, and a resumed 2-process run ends where one process does."""
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40)
    # a plain LSTM: through LayerNorm (the chars default) float32 rounding of the two ways
    # of summing grows past the tolerance in 2 epochs (equal to 3e-8 after one step)
    common = ["--path", text, "--hidden", 16, "--embed", 8, "--layers", 1, "--bptt", 10,
              "--batch-size", 4, "--lr", 0.01, "--dropout", 0, "--epochs", 2,
              "--checkpoint-every", 4, "--no-layer-norm"]
    one, two = tmp_path / "one", tmp_path / "two"
    lstmkit("train", "chars", "--out", one, "--threads", 1, *common)
    lstmkit("train", "chars", "--out", two, "--nproc", 2, "--max-steps", 6, *common)
    carry = {k: v for k, v in load_file(
        next((two / "checkpoint").glob("ckpt-*.safetensors"))).items() if k.startswith("carry")}
    assert carry and all(v.shape[1] == 4 for v in carry.values())     # all 4 streams
    lstmkit("train", "chars", "--out", two, "--nproc", 2, "--resume", "--max-steps", 0, *common)
    assert_close_weights(one, two)


@pytest.mark.skipif(not DATA or not Path(DATA, "names").is_dir(),
                    reason="needs LSTMKIT_DATA with the names data set")
def test_uneven_last_batch_is_weighted_by_its_share(tmp_path):
    """101 names in batches of 32: the last batch of 5 splits 3 + 2 over two processes; each
    rank's mean loss is weighted by its share, so the update equals one process's."""
    common = ["--train-size", 101, "--batch-size", 32, "--epochs", 2, "--hidden", 16,
              "--embed", 8, "--layers", 1, "--dropout", 0, "--no-bidirectional",
              "--weight-drop", 0, "--input-dropout", 0]
    one, two = tmp_path / "one", tmp_path / "two"
    lstmkit("train", "names", "--out", one, "--threads", 1, *common)
    lstmkit("train", "names", "--out", two, "--nproc", 2, *common)
    assert_close_weights(one, two)


def test_batch_that_does_not_split_evenly_is_refused(tmp_path):
    args = ["train", "adding", "--out", tmp_path / "r", "--nproc", 2, "--batch-size", 15,
            "--epochs", 1]
    result = subprocess.run([sys.executable, "-m", "lstmkit", *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--batch-size 15 does not split evenly over 2 processes" in result.stderr
