"""A CSV column as a time series, split by time into train, valid and test (by default the
airline passengers, 1949-1960).

The first row is the header unless its cell in the value column is a number (then every row is
data and columns go by index). Values must be finite numbers; dates, when a column is named
for them or found (``find_dates``), are kept as the strings in the file.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .dates import parse_dates
from .errors import DataError, shorten
from .files import read_utf8
from .store import require


@dataclass
class Series:
    """One series: ``values`` (N,) float64 in file order, ``dates`` (N strings) or None, and
    ``name`` (the value column's header). ``train`` (N - valid - test,), ``valid`` and ``test``
    are consecutive slices of ``values``: test is the last ``test_size`` points and valid the
    ``valid_size`` before them."""

    values: Tensor
    dates: list[str] | None
    name: str
    train: Tensor
    valid: Tensor
    test: Tensor
    has_header: bool = True         # False: the first row was data (columns by index)
    date_name: str | None = None    # the date column's header


def _column(header: list[str], column: str | int, path, role: str) -> int:
    """The index of column in header: a header name, or an index (negative counts from the
    end), also as a string such as "1" from a command line when no column has that name."""
    listing = ", ".join(f"{i}: {name[:40]!r}" for i, name in enumerate(header[:20])) + \
        (f" and {len(header) - 20} more" if len(header) > 20 else "")
    if isinstance(column, str) and column not in header and re.fullmatch(r"-?[0-9]+", column):
        column = int(column)
    if isinstance(column, int):
        if -len(header) <= column < len(header):
            return column % len(header)
    elif column in header:
        return header.index(column)
    raise DataError(f"CSV file {path} has no {role} column {shorten(column)}; its columns are "
                    f"{listing}")


def _rows(path: str | Path) -> list[tuple[int, list[str]]]:
    """The rows of a CSV file, each with the file line it ends on; empty rows at the end are
    dropped."""
    reader = csv.reader(io.StringIO(read_utf8(path, "CSV file"), newline=""))
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as e:                  # e.g. a field longer than csv's limit
        raise DataError(f"CSV file {path}, line {reader.line_num}: not readable as CSV: "
                        f"{e}") from None
    while rows and not rows[-1][1]:
        rows.pop()
    if not rows:
        raise DataError(f"CSV file {path} has no header row")
    return rows


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_header(first: list[str], value_column: str | int | None) -> bool:
    """Whether the first row names the columns: it holds the value column's name, or its cell
    in the value column (the last, or the one given by index) is not a number."""
    names = [name.strip() for name in first]
    if isinstance(value_column, str) and value_column in names:
        return True
    if isinstance(value_column, str) and not re.fullmatch(r"-?[0-9]+", value_column):
        return True                         # a name: only a header can hold it
    index = -1 if value_column is None else int(value_column)
    if not -len(first) <= index < len(first):
        return True                         # the unknown column is reported below
    return not _is_number(first[index])


def _find_dates(header: list[str], rows, value: int) -> int | None:
    """The first column besides the value column whose every cell is a date, if any."""
    for j in range(len(header)):
        if j != value and parse_dates([r[j] if j < len(r) else "" for _, r in rows]):
            return j
    return None


def _value(cell: str | None, path, row: int, line: int, name: str) -> float:
    """A data cell as a finite float; row counts data rows from 1, line is the file's line."""
    where = f"CSV file {path}, data row {row} (line {line}), column {shorten(name)}"
    if cell is None or not cell.strip():
        raise DataError(f"{where}: missing value")
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{where}: {shorten(cell)} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {shorten(cell)} is not a finite number")
    return value


def load_series(path: str | Path | None = None, value_column: str | int | None = None,
                date_column: str | int | None = None, data_dir: str | Path | None = None,
                test_size: int = 12, valid_size: int = 12, find_dates: bool = False) -> Series:
    """A time series from the CSV file at ``path``.

    ``path`` defaults to ``airline_passengers/airline-passengers.csv`` in the data directory,
    with value column "Passengers" and date column "Month". Otherwise ``value_column`` defaults
    to the last column, and there are no dates unless ``date_column`` is given (or, with
    ``find_dates``, a column other than the value column holds nothing but dates: the first
    such). A column is a header name or an index (negative from the end; "1" counts as 1 unless
    a column is named "1"). A file without a header row (its first row's value cell is a
    number) has columns "0", "1", ... and is named "column <index>"; ``has_header`` says which.
    Raises DataError naming the row and column of a missing, non-numeric, NaN or
    infinite value, listing the columns for an unknown column, and when there are too few rows
    to leave at least one training point after the splits.
    """
    if test_size < 0 or valid_size < 0:
        raise ValueError(f"test_size and valid_size must be >= 0, got {test_size}, {valid_size}")
    if path is None:
        path = require("airline_passengers", data_dir) / "airline-passengers.csv"
        value_column = "Passengers" if value_column is None else value_column
        date_column = "Month" if date_column is None else date_column
    rows = _rows(path)
    has_header = _is_header(rows[0][1], value_column)
    if has_header:
        header, rows = [name.strip() for name in rows[0][1]], rows[1:]
    else:
        header = [str(j) for j in range(len(rows[0][1]))]
    v = _column(header, -1 if value_column is None else value_column, path, "value")
    d = None if date_column is None else _column(header, date_column, path, "date")
    if d is None and find_dates:
        d = _find_dates(header, rows, v)
    name = header[v] if has_header else f"column {v}"
    values = [_value(r[v] if v < len(r) else None, path, i, line, name)
              for i, (line, r) in enumerate(rows, start=1)]
    dates = None if d is None else [r[d] if d < len(r) else "" for _, r in rows]
    n_train = len(values) - test_size - valid_size
    if n_train < 1:
        raise DataError(f"CSV file {path} has {len(values)} data rows, too few for "
                        f"valid_size={valid_size} and test_size={test_size} plus at least one "
                        "training point")
    series = torch.tensor(values, dtype=torch.float64)
    return Series(series, dates, name, series[:n_train], series[n_train:n_train + valid_size],
                  series[n_train + valid_size:], has_header,
                  None if d is None else header[d] if has_header else f"column {d}")
