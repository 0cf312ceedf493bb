"""Tasks generated in code: long-range memory benchmarks, parity (a formal language) and a
four-step toy example.

Every generator draws only from the ``torch.Generator`` it is given, so a seed fixes the data.
Outputs are time-major, (T, B, ...), as the layers take them by default.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ADDING_BASELINE_MSE = 1 / 6
"""MSE of always predicting 1 on the adding problem: Var(u_1 + u_2) = 2/12 for u ~ U[0, 1]."""


def adding_problem(batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The adding problem (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015 and
    Arjovsky et al. 2016).

    Returns x of shape (T, B, 2), float32, with T = length: channel 0 holds values drawn from
    U[0, 1], channel 1 is 0 except for two markers (1), one at a uniform step of the first half
    (t < T // 2) and one in the second half. The target y, shape (B,), is the sum of the two
    marked values. A model that ignores its input and predicts 1 (the mean of y) scores an MSE
    of 1/6 ~ 0.167 (``ADDING_BASELINE_MSE``); solving the task means beating that clearly.
    """
    if batch < 1 or length < 2:
        raise ValueError(f"adding_problem needs batch >= 1 and length >= 2, got {batch}, {length}")
    values = torch.rand(length, batch, generator=generator)                     # (T, B)
    half = length // 2
    first = torch.randint(0, half, (batch,), generator=generator)               # (B,)
    second = torch.randint(half, length, (batch,), generator=generator)         # (B,)
    column = torch.arange(batch)
    markers = torch.zeros(length, batch)
    markers[first, column] = 1.0
    markers[second, column] = 1.0
    y = values[first, column] + values[second, column]
    return torch.stack([values, markers], dim=-1), y


def copy_task(batch: int, length: int, generator: torch.Generator, n_symbols: int = 8,
              copy_length: int = 10) -> tuple[Tensor, Tensor]:
    """The copy memory task of Arjovsky, Shah & Bengio 2016 ("Unitary Evolution RNNs").

    Returns x and y, both long of shape (T_total, B) with T_total = length + 2 * copy_length.
    Symbols: 0 is blank, 1..n_symbols are data, n_symbols + 1 is the delimiter. x is
    copy_length random data symbols, then ``length`` steps of which the last is the delimiter
    and the others blank, then copy_length blanks. y is blank everywhere except the last
    copy_length steps, which repeat the data symbols. A memoryless model that predicts blank,
    then a uniform guess over the data symbols once the delimiter has passed, scores a mean
    cross-entropy per step of copy_length * log(n_symbols) / T_total (``copy_task_baseline``).
    """
    if batch < 1 or length < 1 or copy_length < 1 or n_symbols < 1:
        raise ValueError("copy_task needs batch, length, copy_length and n_symbols >= 1, got "
                         f"{batch}, {length}, {copy_length}, {n_symbols}")
    steps = length + 2 * copy_length
    data = torch.randint(1, n_symbols + 1, (copy_length, batch), generator=generator)
    x = torch.zeros(steps, batch, dtype=torch.long)
    x[:copy_length] = data
    x[copy_length + length - 1] = n_symbols + 1                  # the delimiter: "copy now"
    y = torch.zeros(steps, batch, dtype=torch.long)
    y[-copy_length:] = data
    return x, y


def copy_task_baseline(length: int, n_symbols: int = 8, copy_length: int = 10) -> float:
    """The memoryless cross-entropy (nats per step) of ``copy_task``."""
    return copy_length * math.log(n_symbols) / (length + 2 * copy_length)


PARITY_PAD = 2
"""parity's tokens: 0 and 1 are the bits, PARITY_PAD fills a batch past each string's end."""


def parity(batch: int, min_length: int, max_length: int,
           generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Parity, from the Chomsky-hierarchy suite of Deletang et al. 2023 ("Neural networks and
    the Chomsky hierarchy"; a regular language): is the number of ones in a bit string odd?

    Each string's length is drawn uniformly from min_length..max_length, then its bits
    uniformly. Returns tokens (T, B) long with T the longest length drawn (bits 0/1, PARITY_PAD
    past each string's end), lengths (B,) long and labels (B,) long: 1 where the count of ones
    is odd. Labels are balanced, so always guessing scores accuracy 0.5.
    """
    if batch < 1 or not 1 <= min_length <= max_length:
        raise ValueError("parity needs batch >= 1 and 1 <= min_length <= max_length, got "
                         f"batch={batch}, min_length={min_length}, max_length={max_length}")
    lengths = torch.randint(min_length, max_length + 1, (batch,), generator=generator)
    T = int(lengths.max())
    bits = torch.randint(0, 2, (T, batch), generator=generator)               # (T, B)
    inside = torch.arange(T)[:, None] < lengths[None, :]                      # (T, B)
    tokens = torch.where(inside, bits, PARITY_PAD)
    labels = (bits * inside).sum(0) % 2
    return tokens, lengths, labels


def toy_sequences() -> tuple[Tensor, Tensor]:
    """The one-unit LSTM lesson's two companies, whose prices differ only on day 1.

    Company A: 0, 0.5, 0.25, 1 -> target 0; company B: 1, 0.5, 0.25, 1 -> target 1. Returns
    x of shape (T=4, B=2, 1) float32 (column 0 is A, column 1 is B) and y of shape (2,):
    predicting y from the last step needs the first step remembered.
    """
    x = torch.tensor([[0.0, 0.5, 0.25, 1.0],
                      [1.0, 0.5, 0.25, 1.0]]).T.unsqueeze(-1)      # (4, 2, 1)
    return x.contiguous(), torch.tensor([0.0, 1.0])
