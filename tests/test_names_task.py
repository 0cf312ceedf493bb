"""The names task's split choice and class-weighted loss (lstmkit.tasks.classify)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lstmkit.config import Config, ConfigError, defaults_for
from lstmkit.tasks.classify import NamesTask, class_weights, collate

DATA = os.environ.get("LSTMKIT_DATA")
needs_data = pytest.mark.skipif(not DATA or not Path(DATA, "names").is_dir(),
                                reason="needs LSTMKIT_DATA with the shared data sets")


def test_class_weights_inverse_frequency():
    labels = torch.tensor([0, 0, 0, 1])              # class 2 has no training name
    torch.testing.assert_close(class_weights(labels, 3, 1.0), torch.tensor([2 / 3, 2.0, 0.0]))
    torch.testing.assert_close(class_weights(labels, 3, 0.0), torch.tensor([1.0, 1.0, 0.0]))
    half = class_weights(labels, 3, 0.5)
    torch.testing.assert_close(half[0] / half[1], torch.tensor(3 ** -0.5))
    for w in (class_weights(labels, 3, p) for p in (0.0, 0.5, 1.0)):
        assert w[labels].mean().item() == pytest.approx(1.0)   # a name weighs 1 on average


@pytest.mark.parametrize("field, value, expected", [
    ("split", "random", "one of standard, disjoint"), ("class_weight", 1.5, "in [0, 1]"),
    ("class_weight", -0.5, "at least 0"), ("class_weight", "1", "a number")])
def test_bad_values(field, value, expected):
    obj = {**defaults_for("names").to_json(), "meta": {"languages": ["A"]}, field: value}
    with pytest.raises(ConfigError, match=rf"^{field} must be {expected.replace('[', '.')}"):
        Config.from_json(obj)


def test_old_config_without_the_fields_loads():
    obj = {**defaults_for("names").to_json(), "meta": {"languages": ["A"]}}
    del obj["split"], obj["class_weight"]
    cfg = Config.from_json(obj)
    assert (cfg.split, cfg.class_weight) == ("standard", 0.0)


@needs_data
def test_disjoint_split_and_weighted_loss():
    cfg = defaults_for("names")
    cfg.split, cfg.class_weight, cfg.data_dir = "disjoint", 1.0, DATA
    task = NamesTask(cfg)
    names = {k: {tuple(n.tolist()) for n in v[0]} for k, v in task.splits.items()}
    assert not names["train"] & names["test"]
    assert not names["train"] & names["valid"] and not names["valid"] & names["test"]
    assert 1900 <= len(task.splits["test"][1]) <= 2100      # about 10% of 20,074
    labels = task.splits["train"][1]
    counts = torch.bincount(labels, minlength=len(task.languages)).float()
    expected = (1 / counts) * len(labels) / len(task.languages)   # every language weighs N/C
    torch.testing.assert_close(task.loss_weights, expected)
    assert Config.from_json(cfg.to_json()).split == "disjoint"

    class Fixed(torch.nn.Module):
        def forward(self, tokens, lengths):
            return torch.linspace(-1, 1, len(task.languages)).expand(len(lengths), -1) * \
                lengths[:, None]

    model = Fixed()
    idx = [0, 5, len(labels) - 1]
    batch = (*collate([task.splits["train"][0][i] for i in idx]), labels[idx])
    loss, _ = task.train_step(model, batch, None)
    each = F.cross_entropy(model(batch[0], batch[1]), batch[2], reduction="none")
    torch.testing.assert_close(loss, (expected[batch[2]] * each).mean())
