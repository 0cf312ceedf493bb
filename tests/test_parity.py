"""The parity task: its strings and labels (checked by counting), the fixed evaluation sets,
and a tiny `lstmkit train parity` run that writes its metrics."""

from __future__ import annotations

import json

import pytest
import torch
from cli_harness import run_cli

from lstmkit.config import defaults_for
from lstmkit.data.synthetic import PARITY_PAD, parity
from lstmkit.tasks import make_task
from lstmkit.tasks.synthetic import PARITY_LONGEST, TEST_SIZE


def strings(tokens, lengths) -> list[str]:
    """The bit strings of a batch, read column by column up to each length."""
    return ["".join(str(b) for b in tokens[:n, k].tolist()) for k, n in
            enumerate(lengths.tolist())]


def check_batch(tokens, lengths, labels, low, high):
    T, B = tokens.shape
    assert tokens.dtype == lengths.dtype == labels.dtype == torch.int64
    assert lengths.shape == labels.shape == (B,)
    assert lengths.min() >= low and lengths.max() <= high and T == lengths.max()
    for k, (s, n) in enumerate(zip(strings(tokens, lengths), lengths.tolist())):
        assert set(s) <= {"0", "1"}
        assert (tokens[n:, k] == PARITY_PAD).all()
        assert labels[k].item() == s.count("1") % 2          # odd count of ones -> 1


@pytest.mark.parametrize("low, high", [(1, 1), (1, 7), (5, 12)])
def test_parity_strings_lengths_and_labels(low, high):
    tokens, lengths, labels = parity(300, low, high, torch.Generator().manual_seed(low))
    check_batch(tokens, lengths, labels, low, high)
    assert set(lengths.tolist()) == set(range(low, high + 1))   # every length drawn
    assert 0.4 < labels.float().mean().item() < 0.6              # balanced: chance is 0.5


def test_parity_is_fixed_by_the_generator():
    a = parity(20, 1, 9, torch.Generator().manual_seed(3))
    b = parity(20, 1, 9, torch.Generator().manual_seed(3))
    c = parity(20, 1, 9, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a[1:], c[1:]))


@pytest.mark.parametrize("args", [(0, 1, 3), (4, 0, 3), (4, 5, 3)])
def test_parity_bad_sizes(args):
    with pytest.raises(ValueError, match="parity needs batch >= 1 and 1 <= min_length"):
        parity(*args, torch.Generator())


def test_evaluation_sets_are_fixed_with_the_stated_lengths():
    cfg = defaults_for("parity")
    cfg.length = 6
    task, again = make_task(cfg), make_task(cfg)
    assert task.long_lengths == (7, PARITY_LONGEST * 6)
    for split in ("valid", "test"):
        for prefix, (low, high) in (("", (1, 6)), ("long_", (7, 36))):
            batch = task.sets[split][prefix]
            assert len(batch[2]) == TEST_SIZE
            check_batch(*batch, low, high)
            assert all(torch.equal(x, y) for x, y in zip(batch, again.sets[split][prefix]))
    # validation and test are different strings; another --length, other sets
    assert not torch.equal(task.sets["valid"]["long_"][0], task.sets["test"]["long_"][0])
    cfg7 = defaults_for("parity")
    cfg7.length = 7
    assert make_task(cfg7).sets["test"][""][1].max() == 7


def test_default_test_set_is_the_one_results_were_measured_on():
    """A fingerprint of the default (--length 40) test sets: a change to the generator or the
    seeds would make new accuracies incomparable with published ones, so it must show here."""
    sets = make_task(defaults_for("parity")).sets["test"]
    fingerprint = {prefix: (tuple(tokens.shape), int(lengths.sum()), int(labels.sum()),
                            lengths[:5].tolist())
                   for prefix, (tokens, lengths, labels) in sets.items()}
    assert fingerprint == {"": ((40, 1000), 20840, 521, [10, 11, 25, 39, 3]),
                           "long_": ((240, 1000), 140000, 490, [108, 118, 60, 236, 223])}


def test_tiny_run_completes_and_writes_its_metrics(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "parity", "--out", out, "--length", "5", "--hidden", "8",
                     "--embed", "4", "--epochs", "2", "--steps-per-epoch", "3",
                     "--batch-size", "8", "--threads", "1", "--cell", "gru")
    assert result.code == 0, result.err[-2000:]
    assert "on lengths 1..5" in result.out and "on 6..30 (chance 0.5)" in result.out
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in lines if r.get("final")][-1]["test"]
    assert set(final) == {"loss", "accuracy", "long_loss", "long_accuracy"}
    assert all(0 <= final[k] <= 1 for k in ("accuracy", "long_accuracy"))
    assert sum(1 for r in lines if "valid" in r) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "parity" and config["cell"] == "gru"
    assert config["meta"] == {"length": 5, "long_lengths": [6, 30]}
    assert (out / "model.safetensors").exists() and (out / "report.html").exists()
    evaluated = run_cli("evaluate", out)
    assert evaluated.code == 0 and "on 6..30" in evaluated.out, evaluated.err[-2000:]
    exported = run_cli("export", out)                   # tokens and lengths in, logits (N, 2)
    assert exported.code == 0 and "onnxruntime matches" in exported.out, exported.err[-2000:]
    meta = json.loads((out / "model.json").read_text())
    assert [i["name"] for i in meta["inputs"]] == ["tokens", "lengths"]
    assert meta["classes"] == ["even", "odd"]
