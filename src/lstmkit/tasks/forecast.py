"""Time-series forecasting from a CSV column (airline passengers by default).

The series is log-transformed when positive, then standardised with the training mean and
deviation. The model reads the last ``window`` values and predicts the next one; a forecast of
h steps feeds each prediction back as input. The last ``horizon`` points are the test period,
the ``horizon`` before them validation; the rest trains. MAPE = mean |y - y_hat| / |y| in %.

Baselines computed beside the model: seasonal naive (the value one season, 12 steps, earlier)
and a linear trend fitted by least squares to everything before the forecast period.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import plots
from ..data import DataError, load_series
from .base import Task
from .models import SequenceRegressor

SEASON = 12


class Scaler:
    """y -> (log y - mean) / std, and back; log only when every training value is positive."""

    def __init__(self, log: bool, mean: float, std: float):
        self.log, self.mean, self.std = log, mean, std

    @classmethod
    def fit(cls, values: torch.Tensor) -> Scaler:
        log = bool((values > 0).all())
        v = values.log() if log else values
        return cls(log, float(v.mean()), float(v.std()) or 1.0)

    def forward(self, y):
        return ((y.log() if self.log else y) - self.mean) / self.std

    def inverse(self, z):
        y = z * self.std + self.mean
        return y.exp() if self.log else y

    def to_json(self):
        return {"log": self.log, "mean": self.mean, "std": self.std}


def mape(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    return float(((y - y_hat).abs() / y.abs()).mean() * 100)


def seasonal_naive(history: torch.Tensor, steps: int) -> torch.Tensor:
    return torch.stack([history[len(history) - SEASON + (k % SEASON)] for k in range(steps)])


def linear_trend(history: torch.Tensor, steps: int) -> torch.Tensor:
    t = torch.arange(len(history), dtype=torch.float64)
    A = torch.stack([t, torch.ones_like(t)], 1)
    coef = torch.linalg.lstsq(A, history.double()[:, None]).solution[:, 0]
    future = torch.arange(len(history), len(history) + steps, dtype=torch.float64)
    return (coef[0] * future + coef[1]).to(history.dtype)


class ForecastTask(Task):
    name = "forecast"
    select_by = "loss"

    def __init__(self, cfg, for_training=True):
        super().__init__(cfg)
        if not for_training:
            self.scaler = Scaler(**cfg.meta["scaler"])
            return
        s = load_series(cfg.path, cfg.value_column, cfg.date_column, cfg.data_dir,
                        test_size=cfg.horizon, valid_size=cfg.horizon)
        if len(s.train) <= cfg.window + 1:
            raise DataError(f"{len(s.train)} training points are too few for a window of "
                            f"{cfg.window}; lower --window or --horizon")
        self.series = s
        self.values = s.values.float()
        self.n_train, self.n_valid = len(s.train), len(s.valid)
        self.scaler = Scaler.fit(self.values[: self.n_train])
        z = self.scaler.forward(self.values[: self.n_train])
        windows = z.unfold(0, cfg.window + 1, 1)                  # (n, window + 1)
        self.inputs, self.targets = windows[:, :-1], windows[:, -1]
        cfg.meta = {"scaler": self.scaler.to_json(), "name": s.name,
                    "points": {"train": self.n_train, "valid": self.n_valid,
                               "test": len(s.test)}}

    def build_model(self):
        c = self.cfg
        return SequenceRegressor(1, 1, c.cell, c.hidden, c.layers, c.dropout, False, c.engine)

    def train_batches(self, generator):
        order = torch.randperm(len(self.targets), generator=generator)
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            yield self.inputs[idx].t()[:, :, None], self.targets[idx]

    def batches_per_epoch(self):
        return -(-len(self.targets) // self.cfg.batch_size)

    def train_step(self, model, batch, carry):
        x, y = batch
        return F.mse_loss(model(x)[:, 0], y), None

    @torch.no_grad()
    def forecast(self, model, history: torch.Tensor, steps: int) -> torch.Tensor:
        """The next `steps` values after `history` (original units), each fed back in."""
        if len(history) < self.cfg.window:
            raise DataError(f"forecasting needs at least {self.cfg.window} past values "
                            f"(the model's window), got {len(history)}")
        model.eval()
        z = list(self.scaler.forward(history.float())[-self.cfg.window :])
        out = []
        for _ in range(steps):
            x = torch.stack(z[-self.cfg.window :])[:, None, None]     # (window, 1, 1)
            out.append(model(x)[0, 0])
            z.append(out[-1])
        return self.scaler.inverse(torch.stack(out))

    def one_step_residual_std(self, model) -> float:
        """Deviation of one-step-ahead errors on the training windows (scaled units)."""
        model.eval()
        with torch.no_grad():
            pred = model(self.inputs.t()[:, :, None])[:, 0]
        return float((pred - self.targets).std())

    def evaluate(self, model, split):
        start = self.n_train if split == "valid" else self.n_train + self.n_valid
        steps = self.n_valid if split == "valid" else len(self.values) - start
        history, actual = self.values[:start], self.values[start : start + steps]
        pred = self.forecast(model, history, steps)
        return {"loss": F.mse_loss(self.scaler.forward(pred), self.scaler.forward(actual)).item(),
                "mape": mape(actual, pred),
                "mape_seasonal_naive": mape(actual, seasonal_naive(history, steps)),
                "mape_linear_trend": mape(actual, linear_trend(history, steps))}

    def describe(self, m):
        return (f"loss {m['loss']:.4f}  MAPE {m['mape']:.2f}%  (seasonal naive "
                f"{m['mape_seasonal_naive']:.2f}%, linear trend {m['mape_linear_trend']:.2f}%)")

    def interval(self, model, forecast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An approximate 95% band: +-1.96 sigma sqrt(h) in scaled units around step h."""
        sigma = self.cfg.meta.get("residual_std") or self.one_step_residual_std(model)
        z = self.scaler.forward(forecast)
        spread = 1.96 * sigma * torch.arange(1, len(forecast) + 1).sqrt()
        return self.scaler.inverse(z - spread), self.scaler.inverse(z + spread)

    def figures(self, model, run_dir):
        start = self.n_train + self.n_valid
        pred = self.forecast(model, self.values[:start], len(self.values) - start)
        self.cfg.meta["residual_std"] = self.one_step_residual_std(model)
        low, high = self.interval(model, pred)
        plots.forecast(self.values, start, pred, low, high, run_dir / "forecast.png",
                       title=f"{self.series.name}: test period")

