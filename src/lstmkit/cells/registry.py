"""The cell registry: every cell lstmkit knows, by name, each declared once in its own file.

A cell file defines its equations (a ``Cell`` subclass: gate names, parameter layout, one step
forward and backward, the reference step) and registers the names it answers to:

    register("peephole", LSTMCellMath, options={"peephole": True}, layer="LSTM",
             summary="LSTM with peephole connections (gates see the cell state)")

Everything else reads the registry: the CLI's ``--cell`` choices and help, config validation,
the task models (``lstmkit.layers.make_layer``), the layers' parameters (from the cell), the
trace's gate names, the operators (``cell_from_spec``) and the parametrised tests. ``layer``
names the torch-compatible layer class that hosts the cell ("LSTM", "GRU", "RNN"); a new cell
leaves it empty and runs in ``lstmkit.layers.Recurrent``, on the python engine (the compiled
engine has steps for the cells with a C++ kernel: ``Cell.compiled_kernel``).

A cell whose layer walks the whole sequence itself, not one step of h_{t-1} at a time (the
mLSTM's parallel and chunkwise forms, minGRU's and minLSTM's parallel scan), registers its layer
class instead of a ``Cell``, by its import path (a layer lives above the cells):
``register("mlstm", layer="lstmkit.layers.mlstm:mLSTM", states=("C", "n", "m"))``. The class
takes ``(input_size, hidden_size, num_layers=, dropout=, bidirectional=, ...)`` and returns
``(output, state)``, the state's tensors named by ``states``; the tasks, the CLI and config
validation use it like any other cell.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field

from .base import Cell

# spec()[0] of the cells with C++ kernels (csrc/engine.cpp); new cells are numbered from here
FIRST_NEW_FAMILY = 16


@dataclass(frozen=True)
class CellType:
    """A registered cell: a name, its equations, and the options that select it."""

    name: str
    math: type[Cell] | None
    options: dict = field(default_factory=dict)
    # "LSTM", "GRU", "RNN", "" (lstmkit.layers.Recurrent), or "module:Class" of a
    # whole-sequence layer
    layer: str = ""
    summary: str = ""
    states: tuple[str, ...] = ()         # a whole-sequence layer's state names

    @property
    def sequence_layer(self) -> type | None:
        """The layer class of a whole-sequence cell (no per-step ``Cell``), else None."""
        if self.math is not None:
            return None
        module, _, name = self.layer.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def takes_layer_norm(self) -> bool:
        """True for the cells ``layer_norm=True`` turns into their LayerNorm form: lstm and gru
        (torch's LSTM and GRU with no option of their own)."""
        return self.layer in ("LSTM", "GRU") and not self.options

    def make(self, hidden_size: int, proj_size: int = 0, **options) -> Cell:
        """The cell's equations for a layer of hidden_size units."""
        if self.math is None:
            raise ValueError(f"cell {self.name!r} is a whole-sequence layer "
                             f"({self.layer}); it has no per-step equations to make")
        kwargs = {**self.options, **options}
        if proj_size:
            if "proj_size" not in inspect.signature(self.math).parameters:
                raise ValueError(f"cell {self.name!r} has no projection; got proj_size="
                                 f"{proj_size} (proj_size is for the LSTM cells)")
            kwargs["proj_size"] = proj_size
        try:
            inspect.signature(self.math).bind(hidden_size, **kwargs)
        except TypeError:
            known = [p for p in inspect.signature(self.math).parameters if p != "hidden_size"]
            raise ValueError(f"cell {self.name!r} takes the options {known}, got "
                             f"{sorted(kwargs)}") from None
        return self.math(hidden_size, **kwargs)

    @property
    def state_names(self) -> tuple[str, ...]:
        """("h", "c") for a cell with a cell state, else ("h",) (the layer's for a
        whole-sequence cell)."""
        return self.states if self.math is None else self.math.state_names


_CELLS: dict[str, CellType] = {}
_FAMILIES: dict[int, type[Cell]] = {}


def register(name: str, math: type[Cell] | None = None, *, options: dict | None = None,
             layer: str = "", summary: str = "", states: tuple[str, ...] = ()) -> CellType:
    """Make a cell known by name (see the module docstring); returns its entry."""
    if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
        raise ValueError(f"a cell name is letters, digits, '-' and '_', got {name!r}")
    if name in _CELLS and (_CELLS[name].math, _CELLS[name].layer) != (math, layer):
        owner = _CELLS[name].math.__name__ if _CELLS[name].math else _CELLS[name].layer
        raise ValueError(f"cell {name!r} is registered already (by {owner})")
    if math is None:
        if ":" not in layer or not states or not all(isinstance(s, str) for s in states):
            raise ValueError(f"cell {name!r}: without a Cell, give layer='module:Class' of a "
                             f"whole-sequence layer and its state names, got layer={layer!r}, "
                             f"states={states!r}")
        entry = CellType(name, None, dict(options or {}), layer, summary, tuple(states))
        _CELLS[name] = entry
        return entry
    if layer not in ("", "LSTM", "GRU", "RNN"):
        raise ValueError(f"layer must be 'LSTM', 'GRU', 'RNN' or '', got {layer!r}")
    family = math.__dict__.get("family_id")
    if family is None:                   # a new cell: the next free number
        family = max([FIRST_NEW_FAMILY - 1, *_FAMILIES]) + 1
        math.family_id = family
    _FAMILIES[family] = math
    entry = CellType(name, math, dict(options or {}), layer, summary)
    _CELLS[name] = entry
    return entry


def unregister(name: str) -> None:
    """Forget a cell (for tests that register their own)."""
    entry = _CELLS.pop(name, None)
    if entry is not None and entry.math is not None and not any(
            e.math is entry.math for e in _CELLS.values()):
        _FAMILIES.pop(entry.math.family_id, None)


def get(name: str) -> CellType:
    if name not in _CELLS:
        raise ValueError(f"unknown cell {name!r}; expected one of {', '.join(names())}")
    return _CELLS[name]


def names() -> tuple[str, ...]:
    """The registered cells' names: LSTM's, GRU's, RNN's, then the others, each family in
    registration order, the whole-sequence cells last."""
    order = list(_CELLS)
    def key(n):
        math = _CELLS[n].math
        return (math is None, math.family_id if math else 0, order.index(n))
    return tuple(sorted(order, key=key))


def step_names() -> tuple[str, ...]:
    """The names of the cells with per-step equations (a ``Cell``)."""
    return tuple(n for n in names() if _CELLS[n].math is not None)


def math_for_family(family: int) -> type[Cell]:
    """The Cell class whose ``spec()`` starts with family."""
    if family not in _FAMILIES:
        raise ValueError(f"lstmkit: unknown cell family {family}; registered: "
                         f"{sorted(_FAMILIES)}")
    return _FAMILIES[family]
