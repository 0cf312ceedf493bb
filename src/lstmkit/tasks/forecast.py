"""Time-series forecasting from a CSV column (airline passengers by default).

Transform: u_t = log y_t when every value is positive (else y_t); with ``difference`` d > 0
(default 12, a season of months) the model sees d_t = u_t - u_{t-d}, the change over one
season; then d_t is standardised with the training mean and deviation (z_t). The model reads
the last ``window`` values of z and predicts the next; a forecast of h steps feeds each
prediction back and undoes the transform (u_t = d_t + u_{t-d}, y_t = exp u_t). The last
``horizon`` points are the test period, the ``horizon`` before them validation; the rest
trains. MAPE = mean |y - y_hat| / |y| in %.

Baselines computed beside the model: seasonal naive (the value one season earlier), a linear
trend fitted by least squares to everything before the forecast period, and (with a difference)
the mean change: the transform alone with z = 0, i.e. seasonal naive with drift. The season
follows the dates' frequency when a date column is given or found (monthly 12, quarterly 4,
weekly 52, daily 7, hourly 24; yearly and other steps 1, the plain naive forecast); without
regular dates it is the difference d (1 when d = 0); never more than the history holds.
"""

from __future__ import annotations

from datetime import datetime

import torch
import torch.nn.functional as F

from .. import plots
from ..data import DataError, load_series
from ..data.dates import Frequency, infer_frequency, parse_dates
from .base import Task, split_sizes
from .models import SequenceRegressor

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def calendar(series) -> tuple[list[datetime] | None, Frequency | None]:
    """The series' dates, parsed, and their frequency (None when the dates are irregular);
    (None, None) without dates. DataError naming the row of a date it cannot read."""
    if series.dates is None:
        return None, None
    dates = parse_dates(series.dates)
    if dates is None:
        row = next(i for i, d in enumerate(series.dates, 1) if not parse_dates([d]))
        raise DataError(f"date column {series.date_name!r}, data row {row}: "
                        f"{series.dates[row - 1][:40]!r} is not a date (expected e.g. 1949-01, "
                        "1949-01-31, 1949-01-31 12:00 or 1949)")
    return dates, infer_frequency(dates)


def date_axis(dates, frequency, count: int):
    """The x positions of `count` points: the dates, continued by their frequency; None (step
    numbers) without regular dates."""
    if dates is None or frequency is None:
        return None
    return dates + [frequency.add(dates[-1], k) for k in range(1, count - len(dates) + 1)]


def check_range(values: torch.Tensor, path) -> None:
    """Values float32 (what the model computes in) can hold, else DataError naming the first
    one out of range: 1e300 would be inf, and every step's loss NaN."""
    bad = (values.abs() > FLOAT32_MAX).nonzero()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"CSV file {path}, data row {i + 1}: {float(values[i]):g} is out of "
                        f"range: values must lie within +-{FLOAT32_MAX:.3g} (float32); rescale "
                        "the series")


class Transform:
    """y (original units) <-> z (what the model reads), see the module docstring."""

    def __init__(self, log: bool, difference: int, mean: float = 0.0, std: float = 1.0):
        self.log, self.difference, self.mean, self.std = log, difference, mean, std

    @classmethod
    def fit(cls, train: torch.Tensor, difference: int) -> Transform:
        t = cls(bool((train > 0).all()), difference)
        d = t.changes(t.units(train))
        t.mean, t.std = float(d.mean()), float(d.std()) or 1.0
        return t

    def units(self, y):                       # y -> u
        return y.log() if self.log else y

    def changes(self, u):                     # u -> d (len(u) - difference values)
        return u[self.difference :] - u[: len(u) - self.difference] if self.difference else u

    def forward(self, y):                     # y -> z
        return (self.changes(self.units(y)) - self.mean) / self.std

    def continue_units(self, u, z_next):      # the next u from the history u and a new z
        d = z_next * self.std + self.mean
        return d + u[len(u) - self.difference] if self.difference else d

    def to_y(self, u):
        return u.exp() if self.log else u

    def to_json(self):
        return {"log": self.log, "difference": self.difference, "mean": self.mean,
                "std": self.std}


def mape(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    return float(((y - y_hat).abs() / y.abs()).mean() * 100)


def seasonal_naive(history: torch.Tensor, steps: int, season: int) -> torch.Tensor:
    """Each step the value one season earlier (season 1: the last value throughout)."""
    return torch.stack([history[len(history) - season + (k % season)] for k in range(steps)])


def linear_trend(history: torch.Tensor, steps: int) -> torch.Tensor:
    t = torch.arange(len(history), dtype=torch.float64)
    A = torch.stack([t, torch.ones_like(t)], 1)
    coef = torch.linalg.lstsq(A, history.double()[:, None]).solution[:, 0]
    future = torch.arange(len(history), len(history) + steps, dtype=torch.float64)
    return (coef[0] * future + coef[1]).to(history.dtype)


class ForecastTask(Task):
    name = "forecast"
    select_by = "loss"
    dataset = "airline_passengers"

    @property
    def loss_label(self):
        # training fits one step of the scaled changes; validation scores the whole forecast
        return ("squared error (train: one step of the scaled changes; validation: the "
                f"forecast{', in log units' if self.transform.log else ''})")

    def __init__(self, cfg, for_training=True):
        super().__init__(cfg)
        if not for_training:
            self.transform = Transform(**cfg.meta["transform"])
            return
        s = load_series(cfg.path, cfg.value_column, cfg.date_column, cfg.data_dir,
                        test_size=cfg.horizon, valid_size=cfg.horizon, find_dates=True)
        check_range(s.values, cfg.path or "airline-passengers.csv")
        self.dates, self.frequency = calendar(s)
        self.season = self.frequency.season if self.frequency else cfg.difference or 1
        if len(s.train) <= cfg.window + cfg.difference + 1:
            raise DataError(f"{len(s.train)} training points are too few for a window of "
                            f"{cfg.window} after a difference of {cfg.difference}; lower "
                            "--window, --difference or --horizon")
        self.series = s
        self.values = s.values.float()
        self.n_train, self.n_valid = len(s.train), len(s.valid)
        self.transform = Transform.fit(self.values[: self.n_train], cfg.difference)
        z = self.transform.forward(self.values[: self.n_train])
        if not torch.isfinite(z).all():       # e.g. changes of 1e38 overflow the deviation
            raise DataError(f"the series {s.name!r} is out of range for float32 after the "
                            f"transform (its changes or their spread overflow); rescale it")
        windows = z.unfold(0, cfg.window + 1, 1)                  # (n, window + 1)
        self.inputs, self.targets = windows[:, :-1], windows[:, -1]
        cfg.meta = {"transform": self.transform.to_json(), "name": s.name,
                    "points": {"train": self.n_train, "valid": self.n_valid,
                               "test": len(s.test)},
                    "frequency": self.frequency.name if self.frequency else None,
                    "season": self.season}

    def data_source(self):
        notes = [] if self.series.has_header else ["no header row: the first row is data"]
        if self.dates is not None:
            notes.append(f"dates in {self.series.date_name!r}, "
                         f"{self.frequency.name if self.frequency else 'irregular'}")
        notes.append(f"seasonal naive {self.season} back")
        return ", ".join([super().data_source(), *notes])

    def data_sizes(self):
        return split_sizes(self.cfg.meta["points"], "points")

    def build_model(self):
        c = self.cfg
        return SequenceRegressor(1, 1, c.cell, c.hidden, c.layers, c.dropout, False, c.engine,
                                 c.rnn_options())

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
    def forecast(self, model, history: torch.Tensor, steps: int, spread: float | None = None):
        """The next `steps` values after `history` (original units), each prediction fed
        back in. With a spread s (>= 0), the values at z +- s * sqrt(h) at step h instead: a
        (low, high) band."""
        t, window = self.transform, self.cfg.window
        if len(history) < window + t.difference:
            raise DataError(f"forecasting needs at least {window + t.difference} past values "
                            f"(window {window} + difference {t.difference}), got "
                            f"{len(history)}")
        model.eval()
        history = history.float()
        z = list(t.forward(history)[-window:])
        u = list(t.units(history))
        bands = [list(u) for _ in (-1, 1)] if spread is not None else None
        for h in range(1, steps + 1):
            z_next = model(torch.stack(z[-window:])[:, None, None])[0, 0]   # (window, 1, 1)
            z.append(z_next)
            u.append(t.continue_units(u, z_next))
            if bands:
                for sign, band in zip((-1, 1), bands):
                    band.append(t.continue_units(band, z_next + sign * spread * h ** 0.5))
        if bands:
            return tuple(t.to_y(torch.stack(b[len(history):])) for b in bands)
        return t.to_y(torch.stack(u[len(history):]))

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
        units = self.transform.units                  # log units when the series is positive
        metrics = {"loss": F.mse_loss(units(pred), units(actual)).item(),
                   "mape": mape(actual, pred),
                   "mape_seasonal_naive": mape(actual, seasonal_naive(
                       history, steps, min(self.season, len(history)))),
                   "mape_linear_trend": mape(actual, linear_trend(history, steps))}
        if self.transform.difference:             # the transform alone: z = 0 at every step
            metrics["mape_mean_change"] = mape(actual, self.mean_change(history, steps))
        return metrics

    def mean_change(self, history: torch.Tensor, steps: int) -> torch.Tensor:
        """The forecast that predicts z = 0 throughout: each value is the one a difference
        earlier times the mean training change (seasonal naive with drift)."""
        t = self.transform
        u = list(t.units(history.float()))
        for _ in range(steps):
            u.append(t.continue_units(u, torch.tensor(0.0)))
        return t.to_y(torch.stack(u[len(history):]))

    def describe(self, m):
        drift = (f", mean change {m['mape_mean_change']:.2f}%" if "mape_mean_change" in m
                 else "")
        season = getattr(self, "season", None)          # known where the data was read
        naive = "naive" if season == 1 else "seasonal naive" + \
            (f" ({season} back)" if season else "")
        return (f"loss {m['loss']:.4f}  MAPE {m['mape']:.2f}%  ({naive} "
                f"{m['mape_seasonal_naive']:.2f}%, linear trend {m['mape_linear_trend']:.2f}%"
                f"{drift})")

    def interval(self, model, history, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An approximate 95% band: z +- 1.96 sigma sqrt(h) at step h, sigma the deviation of
        one-step errors on the training windows (model-based, not a calibrated interval)."""
        sigma = self.cfg.meta["residual_std"] if "residual_std" in self.cfg.meta else \
            self.one_step_residual_std(model)
        return self.forecast(model, history, steps, spread=1.96 * sigma)

    def figures(self, model, run_dir):
        start = self.n_train + self.n_valid
        pred = self.forecast(model, self.values[:start], len(self.values) - start)
        self.cfg.meta["residual_std"] = self.one_step_residual_std(model)
        low, high = self.interval(model, self.values[:start], len(pred))
        plots.forecast(self.values, start, pred, low, high, run_dir / "forecast.png",
                       title=f"{self.series.name}: test period",
                       x=date_axis(self.dates, self.frequency, len(self.values)),
                       ylabel=self.series.name)

