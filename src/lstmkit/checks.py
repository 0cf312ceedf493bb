"""Input validation for the layers: each error names what was expected and what came."""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def shape_str(shape) -> str:
    dims = [str(int(s)) for s in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _check_tensor_input(name: str, x, input_size: int, layouts: dict[int, str]) -> None:
    """x must be a floating-point tensor whose dimension count is a key of layouts (their
    values name the shapes), with input_size features on its last axis and no empty axis."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected the input as a torch.Tensor or a PackedSequence, "
                        f"got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point input (float32, float64 or bfloat16), "
                        f"got {x.dtype}")
    if x.dim() not in layouts:
        raise ValueError(f"{name}: expected input of shape {' or '.join(layouts.values())}, "
                         f"got {x.dim()} dimensions with shape {shape_str(x.shape)}")
    if x.shape[-1] != input_size:
        raise ValueError(f"{name}: expected {input_size} input features (input_size), got "
                         f"{x.shape[-1]} in input of shape {shape_str(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name}: got an empty input of shape {shape_str(x.shape)}; "
                         "every sequence needs at least one step and the batch one sequence")


def check_input(name: str, x, input_size: int, batch_first: bool, packed: bool) -> None:
    """x is a layer's input: (L, N, H_in), (N, L, H_in) with batch_first, (L, H_in) unbatched,
    or the (sum of lengths, H_in) data of a PackedSequence."""
    if packed:
        layouts = {2: "(sum of lengths, H_in) in a PackedSequence"}
    else:
        layouts = {2: "(L, H_in) unbatched",
                   3: ("(N, L, H_in)" if batch_first else "(L, N, H_in)") + " batched"}
    _check_tensor_input(name, x, input_size, layouts)


def check_step_input(name: str, x, input_size: int) -> None:
    """x is a single-step cell's input: (N, H_in), or (H_in,) unbatched."""
    _check_tensor_input(name, x, input_size, {2: "(N, H_in)", 1: "(H_in,) unbatched"})


def check_state(name: str, what: str, s, expected_shape: tuple, like: Tensor,
                layout: str) -> Tensor:
    """s is an initial state (h_0, c_0, ...); returns it, or raises naming the expected shape
    and its layout, e.g. "(num_layers * num_directions, N, H)"."""
    if not isinstance(s, Tensor):
        raise TypeError(f"{name}: expected {what} as a torch.Tensor, got {type(s).__name__}")
    if tuple(s.shape) != tuple(expected_shape):
        raise ValueError(f"{name}: expected {what} of shape {shape_str(expected_shape)} "
                         f"{layout}, got {shape_str(s.shape)}")
    if s.dtype != like.dtype:
        raise TypeError(f"{name}: expected {what} of dtype {like.dtype} like the input, "
                        f"got {s.dtype}")
    if s.device != like.device:
        raise ValueError(f"{name}: expected {what} on {like.device} like the input, "
                         f"got {s.device}")
    return s


def check_state_tuple(name: str, hx, count: int, labels: str):
    """An LSTM's hx is a pair (h_0, c_0); the others' a single tensor. Returns a list."""
    if count == 1:
        return [hx]
    if not isinstance(hx, (tuple, list)) or len(hx) != count:
        got = type(hx).__name__
        if isinstance(hx, (tuple, list)):
            got += f" of {len(hx)}"
        raise TypeError(f"{name}: expected hx as a tuple {labels}, got {got}")
    return list(hx)


def check_lengths(name: str, lengths, batch: int, steps: int) -> Tensor:
    """lengths of a padded batch: B ints, sorted longest first, each in 1..T."""
    lengths = torch.as_tensor(lengths)
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


def check_dtype_matches(name: str, x: Tensor, weight: Tensor) -> None:
    if x.dtype != weight.dtype:
        raise TypeError(f"{name}: expected input of dtype {weight.dtype} like the parameters, "
                        f"got {x.dtype}; convert one of them (e.g. layer.to({x.dtype}))")
