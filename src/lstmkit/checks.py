"""Input validation for the layers: each error names what was expected and what came."""

from __future__ import annotations

import numbers
import operator
import warnings

import torch
from torch import Tensor


def shape_str(shape) -> str:
    dims = [str(int(s)) for s in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _check_tensor_input(name: str, x, input_size: int, layouts: dict[int, str],
                        dtype_error: type[Exception], cell: bool) -> None:
    """x must be a floating-point tensor whose dimension count is a key of layouts (their
    values name the shapes), with input_size features on its last axis. The classes are
    torch.nn's: ValueError for the dimension count, RuntimeError for the feature size, and
    dtype_error (the layer's or the cell's, which differ in torch) for an integer input. Each
    message ends with torch's own words in parentheses, for code that matches them."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected the input as a torch.Tensor or a PackedSequence, "
                        f"got {type(x).__name__}")
    if x.dim() not in layouts:
        dims = "1D or 2D" if cell else "2D or 3D"
        raise ValueError(f"{name}: expected input of shape {' or '.join(layouts.values())}, "
                         f"got {x.dim()} dimensions with shape {shape_str(x.shape)} (Expected "
                         f"input to be {dims}, got {x.dim()}D instead)")
    if not x.is_floating_point():
        raise dtype_error(f"{name}: expected a floating-point input (float32, float64 or "
                          f"bfloat16), got {x.dtype}")
    if x.shape[-1] != input_size:
        torch_words = (f"input has inconsistent input_size: got {x.shape[-1]} expected "
                       f"{input_size}") if cell else ("input.size(-1) must be equal to "
                                                      f"input_size. Expected {input_size}, got "
                                                      f"{x.shape[-1]}")
        raise RuntimeError(f"{name}: expected {input_size} input features (input_size), got "
                           f"{x.shape[-1]} in input of shape {shape_str(x.shape)} "
                           f"({torch_words})")


def check_input(name: str, x, input_size: int, batch_first: bool, packed: bool) -> None:
    """x is a layer's input: (L, N, H_in), (N, L, H_in) with batch_first, (L, H_in) unbatched,
    or the (sum of lengths, H_in) data of a PackedSequence. An empty batch (N = 0) passes, as
    in torch; no time step (L = 0) is torch's RuntimeError."""
    if packed:
        layouts = {2: "(sum of lengths, H_in) in a PackedSequence"}
    else:
        layouts = {2: "(L, H_in) unbatched",
                   3: ("(N, L, H_in)" if batch_first else "(L, N, H_in)") + " batched"}
    _check_tensor_input(name, x, input_size, layouts, ValueError, cell=False)
    steps = x.shape[1] if batch_first and x.dim() == 3 else x.shape[0]
    if not packed and steps == 0:
        raise RuntimeError(f"{name}: expected at least one time step, got input of shape "
                           f"{shape_str(x.shape)} (Expected sequence length to be larger than 0 "
                           "in RNN)")


def check_step_input(name: str, x, input_size: int) -> None:
    """x is a single-step cell's input: (N, H_in), or (H_in,) unbatched; N may be 0."""
    _check_tensor_input(name, x, input_size, {2: "(N, H_in)", 1: "(H_in,) unbatched"},
                        RuntimeError, cell=True)


def check_state(name: str, what: str, s, expected_shape: tuple, like: Tensor,
                layout: str, torch_name: str | None = None, cell_index: int = 0) -> Tensor:
    """s is an initial state (h_0, c_0, ...); returns it, or raises naming the expected shape
    and its layout, e.g. "(num_layers * num_directions, N, H)". A wrong shape, dtype or device
    is a RuntimeError, as torch's kernels raise it. The shape's message ends in torch's words:
    a layer's for its state ``torch_name`` ("hidden[0]"), else a cell's for hx[cell_index]."""
    if not isinstance(s, Tensor):
        raise TypeError(f"{name}: expected {what} as a torch.Tensor, got {type(s).__name__}")
    if tuple(s.shape) != tuple(expected_shape):
        if torch_name:
            said = f"Expected {torch_name} size {shape_str(expected_shape)}, got {list(s.shape)}"
        elif s.dim() == 2 and len(expected_shape) == 2 and s.shape[0] != expected_shape[0]:
            said = (f"Input batch size {expected_shape[0]} doesn't match hidden{cell_index} "
                    f"batch size {s.shape[0]}")
        else:
            said = (f"hidden{cell_index} has inconsistent hidden_size: got {s.shape[-1]}, "
                    f"expected {expected_shape[-1]}")
        raise RuntimeError(f"{name}: expected {what} of shape {shape_str(expected_shape)} "
                           f"{layout}, got {shape_str(s.shape)} ({said})")
    if s.dtype != like.dtype:
        raise RuntimeError(f"{name}: expected {what} of dtype {like.dtype} like the input, "
                        f"got {s.dtype}")
    if s.device != like.device:
        raise RuntimeError(f"{name}: expected {what} on {like.device} like the input, "
                         f"got {s.device}")
    return s


def check_state_tuple(name: str, hx, count: int, labels: str):
    """An LSTM's hx is a pair (h_0, c_0); the others' a single tensor. Returns a list. Not a
    tuple is a TypeError; a tuple of another length torch's RuntimeError ("expects two hidden
    states")."""
    if count == 1:
        return [hx]
    if not isinstance(hx, (tuple, list)):
        raise TypeError(f"{name}: expected hx as a tuple {labels}, got {type(hx).__name__}")
    if len(hx) != count:
        raise RuntimeError(f"{name}: expected hx as a tuple {labels}, got "
                           f"{type(hx).__name__} of {len(hx)}")
    return list(hx)


def check_lengths(name: str, lengths, batch: int, steps: int) -> Tensor:
    """lengths of a padded batch: B ints, sorted longest first, each in 1..T."""
    lengths = torch.as_tensor(lengths)
    if batch == 0 and lengths.numel() == 0:
        return lengths.to("cpu", torch.int64).reshape(0)       # an empty batch, as [] reads
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(f"{name}: expected lengths as {batch} integers (one per sequence), "
                         f"got shape {shape_str(lengths.shape)}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer lengths, got {lengths.dtype}")
    lengths = lengths.to("cpu", torch.int64)
    values = lengths.tolist()
    if min(values) < 1 or max(values) > steps:
        raise ValueError(f"{name}: expected every length between 1 and the sequence length "
                         f"T={steps}, got {values}")
    if any(a < b for a, b in zip(values, values[1:])):
        raise ValueError(f"{name}: expected lengths sorted longest first, got {values}; sort the "
                         "batch, or pass a PackedSequence made with enforce_sorted=False")
    return lengths


def check_dtype_matches(name: str, x: Tensor, weight: Tensor,
                        error: type[Exception] = ValueError) -> None:
    """torch.nn's layers raise ValueError for an input whose dtype is not the weights', its
    cells (from the kernel) RuntimeError; the layers' message ends in torch's words."""
    if x.dtype != weight.dtype:
        said = "" if error is not ValueError else (
            f" (RNN input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
            f"Convert input: input.to({weight.dtype}), or convert model: model.to({x.dtype}))")
        raise error(f"{name}: expected input of dtype {weight.dtype} like the parameters, "
                    f"got {x.dtype}; convert one of them (e.g. layer.to({x.dtype})){said}")


# ---------------------------------------------------------------- constructor arguments
def _got(value) -> str:
    return f"got: {type(value).__name__} ({value!r})"                  # torch's "got: int"


def _compare(name: str, arg: str, value, test) -> bool:
    """test(value), a comparison with an int; a TypeError naming arg where value has none."""
    try:
        return bool(test(value))
    except TypeError:
        raise TypeError(f"{name}: {arg} should be an integer, {_got(value)}") from None


def _index(name: str, arg: str, value) -> int:
    """value as an int where torch.empty takes it as a size (int, numpy integer, True)."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: {arg} should be an integer, {_got(value)}") from None


def check_layer_args(name: str, input_size, hidden_size, num_layers, bias, batch_first,
                     dropout, proj_size) -> tuple[int, int, int, float, int]:
    """torch.nn.RNNBase's argument checks, in its order and with its exception classes (2.13):
    a value torch takes passes, one it rejects raises the same class. Returns input_size,
    hidden_size, num_layers, dropout and proj_size as torch uses them (ints, a float)."""
    try:
        rate = float(dropout)               # torch converts first: None or 1j is a TypeError
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: dropout should be a number in [0, 1], {_got(dropout)}") from None
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) \
            or not 0 <= rate <= 1:
        raise ValueError(f"{name}: dropout should be a number in [0, 1] (the probability of "
                         f"zeroing an element), {_got(dropout)}")
    if rate > 0 and _compare(name, "num_layers", num_layers, lambda n: n == 1):
        warnings.warn(f"{name}: dropout applies between layers, so dropout={dropout} with "
                      "num_layers=1 has no effect", stacklevel=4)
    check_flags(name, bias=bias, batch_first=batch_first)
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int):
            raise TypeError(f"{name}: {arg} should be of type int, {_got(value)}")
        if value <= 0:
            raise ValueError(f"{name}: {arg} must be greater than zero, got {value}")
    if _compare(name, "num_layers", num_layers, lambda n: n <= 0):
        raise ValueError(f"{name}: num_layers must be greater than zero, got {num_layers!r}")
    if _compare(name, "proj_size", proj_size, lambda p: p < 0):
        raise ValueError(f"{name}: proj_size should be a positive integer or zero to disable "
                         f"projections, got {proj_size!r}")
    if proj_size >= hidden_size:
        raise ValueError(f"{name}: proj_size has to be smaller than hidden_size "
                         f"({hidden_size}), got {proj_size!r}")
    if proj_size and isinstance(proj_size, bool):   # torch.empty takes no bool as a size
        raise TypeError(f"{name}: proj_size should be an integer, {_got(proj_size)}")
    projection = _index(name, "proj_size", proj_size) if proj_size else 0
    return (int(input_size), int(hidden_size), _index(name, "num_layers", num_layers), rate,
            projection)


def check_cell_args(name: str, input_size, hidden_size, bias) -> tuple[int, int]:
    """torch.nn.RNNCellBase checks nothing: its sizes go to torch.empty, which takes 0 and any
    integer (TypeError for others, RuntimeError below 0), and bias counts by its truth value.
    The same here; a string bias (bias='False' gives a cell with biases) is warned about."""
    sizes = []
    for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        size = _index(name, arg, value)
        if size < 0:
            raise RuntimeError(f"{name}: {arg} must be zero or more, got {size}")
        sizes.append(size)
    if isinstance(bias, str):
        warnings.warn(f"{name}: bias should be of type bool, {_got(bias)}; like "
                      f"torch.nn.{name} this cell takes it as {bool(bias)}", stacklevel=4)
    return sizes[0], sizes[1]


def check_flags(name: str, **flags) -> None:
    """Switches that must be bools: torch's (bias, batch_first) and lstmkit's own (peephole,
    coupled, reset_after)."""
    for arg, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name}: {arg} should be of type bool, {_got(value)}")


def check_zoneout(name: str, z, state_names: tuple[str, ...]) -> tuple[float, ...]:
    """zoneout as the probability each state keeps its value, per state in state order: a
    number z for every state, or (z_c, z_h) for a cell with a cell state (h, c)."""
    if isinstance(z, (tuple, list)):
        if tuple(state_names) != ("h", "c"):
            raise ValueError(f"{name}: zoneout=(z_c, z_h) is for a cell with a cell state; this "
                             f"cell's only state is h: give zoneout=z_h (a number), got {z!r}")
        if len(z) != 2:
            raise ValueError(f"{name}: zoneout must be a number or a pair (z_c, z_h), got {z!r}")
        z_c = check_probability(name, "zoneout z_c", z[0])
        z_h = check_probability(name, "zoneout z_h", z[1])
        return (z_h, z_c)
    if isinstance(z, bool) or not isinstance(z, (int, float)):
        raise TypeError(f"{name}: zoneout should be a number in [0, 1) or a pair (z_c, z_h), "
                        f"{_got(z)}")
    return (check_probability(name, "zoneout", z),) * len(state_names)


def check_probability(name: str, arg: str, p) -> float:
    """A dropout-like probability: a number in [0, 1) (1 would drop everything)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{name}: {arg} should be a number in [0, 1), {_got(p)}")
    if not 0 <= p < 1:
        raise ValueError(f"{name}: {arg} must be in [0, 1), got {p!r}")
    return float(p)
