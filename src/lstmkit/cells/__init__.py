"""The cell families: one time step forward and backward (``base.Cell``), one file each."""

from __future__ import annotations

from functools import cache

from .base import Cell
from .gru import GRUCellMath
from .lstm import LSTMCellMath
from .rnn import RNNCellMath


@cache
def _cell(spec: tuple[int, ...]) -> Cell:
    family, H, P, peephole, coupled, reset_after, relu = spec
    if family == 0:
        return LSTMCellMath(H, 0 if P == H else P, bool(peephole), bool(coupled))
    if family == 1:
        return GRUCellMath(H, bool(reset_after))
    if family == 2:
        return RNNCellMath(H, "relu" if relu else "tanh")
    raise ValueError(f"lstmkit: unknown cell family {family} in spec {list(spec)}")


def cell_from_spec(spec) -> Cell:
    """The cell that ``Cell.spec()`` describes (one shared instance per spec)."""
    return _cell(tuple(int(v) for v in spec))
