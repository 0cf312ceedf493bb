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
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from .base import Cell

# spec()[0] of the cells with C++ kernels (csrc/engine.cpp); new cells are numbered from here
FIRST_NEW_FAMILY = 16


@dataclass(frozen=True)
class CellType:
    """A registered cell: a name, its equations, and the options that select it."""

    name: str
    math: type[Cell]
    options: dict = field(default_factory=dict)
    layer: str = ""                      # "LSTM", "GRU", "RNN", or "" (lstmkit.layers.Recurrent)
    summary: str = ""

    def make(self, hidden_size: int, proj_size: int = 0, **options) -> Cell:
        """The cell's equations for a layer of hidden_size units."""
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
        """("h", "c") for a cell with a cell state, else ("h",)."""
        return self.math.state_names


_CELLS: dict[str, CellType] = {}
_FAMILIES: dict[int, type[Cell]] = {}


def register(name: str, math: type[Cell], *, options: dict | None = None, layer: str = "",
             summary: str = "") -> CellType:
    """Make a cell known by name (see the module docstring); returns its entry."""
    if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
        raise ValueError(f"a cell name is letters, digits, '-' and '_', got {name!r}")
    if name in _CELLS and _CELLS[name].math is not math:
        raise ValueError(f"cell {name!r} is registered already (by {_CELLS[name].math.__name__})")
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
    if entry is not None and not any(e.math is entry.math for e in _CELLS.values()):
        _FAMILIES.pop(entry.math.family_id, None)


def get(name: str) -> CellType:
    if name not in _CELLS:
        raise ValueError(f"unknown cell {name!r}; expected one of {', '.join(names())}")
    return _CELLS[name]


def names() -> tuple[str, ...]:
    """The registered cells' names: LSTM's, GRU's, RNN's, then the others, each family in
    registration order."""
    order = list(_CELLS)
    return tuple(sorted(order, key=lambda n: (_CELLS[n].math.family_id, order.index(n))))


def math_for_family(family: int) -> type[Cell]:
    """The Cell class whose ``spec()`` starts with family."""
    if family not in _FAMILIES:
        raise ValueError(f"lstmkit: unknown cell family {family}; registered: "
                         f"{sorted(_FAMILIES)}")
    return _FAMILIES[family]
