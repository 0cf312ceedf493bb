"""The cells: one time step forward and backward (``base.Cell``), one file each, every one
registered by name in ``registry``."""

from __future__ import annotations

from functools import cache

from . import minrnn, mlstm, registry
from .base import Cell
from .gru import GRUCellMath
from .layernorm import LayerNormGRUCellMath, LayerNormLSTMCellMath
from .lstm import LSTMCellMath
from .rnn import RNNCellMath
from .slstm import SLSTMCellMath

__all__ = ["Cell", "GRUCellMath", "LSTMCellMath", "LayerNormGRUCellMath", "LayerNormLSTMCellMath",
           "RNNCellMath", "SLSTMCellMath", "cell_from_spec", "minrnn", "mlstm", "registry"]


@cache
def _cell(spec: tuple[int, ...]) -> Cell:
    return registry.math_for_family(spec[0]).from_spec(list(spec))


def cell_from_spec(spec) -> Cell:
    """The cell that ``Cell.spec()`` describes (one shared instance per spec)."""
    key = tuple(int(v) for v in spec)
    cell = _cell(key)
    if type(cell) is not registry.math_for_family(key[0]):    # a family number reused
        _cell.cache_clear()
        cell = _cell(key)
    return cell
