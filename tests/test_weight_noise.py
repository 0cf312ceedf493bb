"""--weight-noise: each step takes the gradient at w + e (e ~ N(0, std^2), fresh per step) and
applies it to w; the weights the step leaves are w - lr * grad L(w + e), computed here
independently with autograd, and no noise is left in them."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from lstmkit import distributed
from lstmkit.config import defaults_for
from lstmkit.train import Run, TrainState


class QuadraticTask:
    """L(w) = mean((net(x) - y)^2) on one fixed batch."""

    def train_step(self, net, batch, carry):
        x, y = batch
        return ((net(x) - y) ** 2).mean(), None

    def batch_units(self, batch):
        return len(batch[0])

    def loss_weight(self, batch):
        return 1.0


def _step(std: float, seed: int = 3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    batch = (torch.randn(8, 4), torch.randn(8, 2))
    cfg = dataclasses.replace(defaults_for("adding"), weight_noise=std, clip=0.0,
                              optimizer="sgd", lr=0.5)
    w0 = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    run = Run(cfg, None, QuadraticTask(), model, optimizer, TrainState(), print,
              distributed.Group(), None)
    torch.manual_seed(seed)
    run.step(batch, None, 0)
    return model, w0, batch


@pytest.mark.parametrize("std", [0.0, 0.3])
def test_step_takes_the_gradient_at_the_noisy_weights(std):
    model, w0, (x, y) = _step(std)
    torch.manual_seed(3)                                      # the noise the step drew
    noise = [torch.randn_like(w) * std if std else torch.zeros_like(w) for w in w0]
    noisy = [(w + e).requires_grad_() for w, e in zip(w0, noise)]
    h = torch.tanh(x @ noisy[0].t() + noisy[1])
    loss = ((h @ noisy[2].t() + noisy[3] - y) ** 2).mean()
    grads = torch.autograd.grad(loss, noisy)
    for p, w, g in zip(model.parameters(), w0, grads):
        torch.testing.assert_close(p.detach(), w - 0.5 * g, atol=1e-6, rtol=0)


def test_noise_changes_the_step():
    with_noise, w0, _ = _step(0.3)
    without, _, _ = _step(0.0)
    diff = max((a - b).abs().max().item()
               for a, b in zip(with_noise.parameters(), without.parameters()))
    assert diff > 1e-3


def test_negative_weight_noise_is_refused():
    from lstmkit.config import ConfigError

    cfg = dataclasses.replace(defaults_for("adding"), weight_noise=-0.1)
    with pytest.raises(ConfigError, match="weight_noise"):
        cfg.validate()
