"""The main job until the task CLI lands: train LSTMs on a toy sequence and watch the loss fall.

Task: read a noisy sum of two sines, step by step, and predict the next clean value. Trains a
standard LSTM (hand-written BPTT engine) and a peephole LSTM side by side for a few hundred Adam
steps, prints the loss as it falls, then traces one batch to show what the gates did:
the mean forget gate f_t and the product of forget gates prod f_t that carries dc_T/dc_t.

    .venv/bin/python examples/toy_lstm.py [--steps 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import lstmkit


def toy_batch(batch: int, steps: int, generator: torch.Generator):
    """Inputs (T, B, 1): noisy sin(a t) + 0.5 sin(b t); targets (T, B, 1): the next clean value."""
    t = torch.arange(steps + 1, dtype=torch.float32)[:, None]
    a = 0.1 + 0.2 * torch.rand(1, batch, generator=generator)
    b = 0.3 + 0.3 * torch.rand(1, batch, generator=generator)
    phase = 6.28 * torch.rand(1, batch, generator=generator)
    clean = torch.sin(a * t + phase) + 0.5 * torch.sin(b * t + phase)      # (T+1, B)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=generator)
    return noisy[:-1, :, None], clean[1:, :, None]


class Forecaster(nn.Module):
    def __init__(self, **variant):
        super().__init__()
        self.lstm = lstmkit.LSTM(1, 32, engine="python", **variant)
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="Adam steps per model")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    models = {"lstm": Forecaster(), "peephole lstm": Forecaster(peephole=True)}
    optims = {k: torch.optim.Adam(m.parameters(), lr=1e-2) for k, m in models.items()}
    gen = torch.Generator().manual_seed(args.seed)
    test_x, test_y = toy_batch(256, 60, torch.Generator().manual_seed(args.seed + 1))

    print("Predict the next value of a noisy two-sine signal (T=60, batch 32).")
    print("Mean squared error on 256 held-out sequences (predicting 0 scores "
          f"{test_y.pow(2).mean():.3f}):\n")
    print(f"{'step':>6} | " + " | ".join(f"{k:>13}" for k in models))
    start = time.perf_counter()
    for step in range(args.steps + 1):
        if step % (args.steps // 6 or 1) == 0:
            with torch.no_grad():
                losses = [nn.functional.mse_loss(m(test_x), test_y).item() for m in models.values()]
            print(f"{step:>6} | " + " | ".join(f"{v:>13.4f}" for v in losses), flush=True)
        x, y = toy_batch(32, 60, gen)
        for name, model in models.items():
            optims[name].zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optims[name].step()
    print(f"\ntrained in {time.perf_counter() - start:.1f} s")

    trace = models["lstm"].lstm.trace(test_x[:, :8])
    f = trace.steps[0][0].gates["f"]                                  # (T, B, H)
    print(f"\ntrace of the trained LSTM: mean forget gate f_t = {f.mean():.3f}; "
          f"dc_T/dc_t along the cell path = prod f: {f[-10:].prod(0).mean():.3g} over the "
          f"last 10 steps, {f.prod(0).mean():.3g} over all {f.shape[0]}")


if __name__ == "__main__":
    main()
