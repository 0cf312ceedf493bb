"""Tasks generated in code: shapes, structure, reproducibility, and the baselines their
docstrings quote."""

from __future__ import annotations

import math

import pytest
import torch

from lstmkit.data import (
    ADDING_BASELINE_MSE,
    adding_problem,
    copy_task,
    copy_task_baseline,
    toy_sequences,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ adding problem
@pytest.mark.parametrize("length", [2, 3, 50])
def test_adding_problem_structure(length):
    x, y = adding_problem(64, length, gen())
    assert x.shape == (length, 64, 2) and y.shape == (64,) and x.dtype == torch.float32
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    half = length // 2
    assert (markers[:half].sum(0) == 1).all() and (markers[half:].sum(0) == 1).all()
    assert torch.allclose(y, (values * markers).sum(0))


def test_adding_problem_reproducible():
    a, b = adding_problem(8, 20, gen(3)), adding_problem(8, 20, gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], adding_problem(8, 20, gen(4))[0])


def test_adding_problem_baseline_mse_is_one_sixth():
    n = 200_000
    _, y = adding_problem(n, 4, gen(1))
    mse = float(((y.double() - 1) ** 2).mean())
    # y - 1 is triangular on [-1, 1]: E[(y-1)^2] = 1/6, E[(y-1)^4] = 1/15
    standard_error = math.sqrt((1 / 15 - 1 / 36) / n)
    assert ADDING_BASELINE_MSE == pytest.approx(1 / 6)
    assert abs(mse - ADDING_BASELINE_MSE) < 3 * standard_error


@pytest.mark.parametrize("batch, length", [(0, 10), (4, 1)])
def test_adding_problem_bad_sizes(batch, length):
    with pytest.raises(ValueError, match=r"adding_problem needs batch >= 1 and length >= 2"):
        adding_problem(batch, length, gen())


# ------------------------------------------------------------------ copy task
@pytest.mark.parametrize("length, n_symbols, copy_length", [(100, 8, 10), (1, 3, 4)])
def test_copy_task_structure(length, n_symbols, copy_length):
    x, y = copy_task(32, length, gen(), n_symbols=n_symbols, copy_length=copy_length)
    steps = length + 2 * copy_length
    assert x.shape == y.shape == (steps, 32) and x.dtype == y.dtype == torch.long
    data = x[:copy_length]
    assert ((data >= 1) & (data <= n_symbols)).all()
    delimiter = copy_length + length - 1
    assert (x[copy_length:delimiter] == 0).all()
    assert (x[delimiter] == n_symbols + 1).all()
    assert (x[delimiter + 1:] == 0).all()
    assert (y[:-copy_length] == 0).all()
    assert torch.equal(y[-copy_length:], data)


def test_copy_task_symbols_uniform_and_reproducible():
    x, _ = copy_task(4000, 5, gen(7))
    counts = torch.bincount(x[:10].flatten(), minlength=9)[1:]          # 40,000 draws
    assert (counts - 5000).abs().max() < 5 * math.sqrt(40_000 * (1 / 8) * (7 / 8))
    assert torch.equal(x, copy_task(4000, 5, gen(7))[0])


def test_copy_task_baseline():
    assert copy_task_baseline(100) == pytest.approx(10 * math.log(8) / 120)
    # the memoryless predictor: blank (log 1 = 0) until the copy, uniform over 8 after
    length, copy_length = 20, 3
    per_step = [0.0] * (length + copy_length) + [math.log(5)] * copy_length
    assert copy_task_baseline(length, 5, copy_length) == pytest.approx(
        sum(per_step) / len(per_step))


def test_copy_task_bad_sizes():
    with pytest.raises(ValueError, match=r"copy_task needs batch, length, copy_length and "
                       r"n_symbols >= 1"):
        copy_task(4, 0, gen())


# ------------------------------------------------------------------ toy sequences
def test_toy_sequences():
    x, y = toy_sequences()
    assert x.shape == (4, 2, 1) and y.shape == (2,)
    assert x[:, 0, 0].tolist() == [0.0, 0.5, 0.25, 1.0]
    assert x[:, 1, 0].tolist() == [1.0, 0.5, 0.25, 1.0]
    assert y.tolist() == [0.0, 1.0]
