"""Input validation for the layers: each error names what was expected and what came."""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_input(name: str, x: Tensor, input_size: int, batch_first: bool, packed: bool) -> None:
    """x is a layer's input: (L, N, H_in), (N, L, H_in) with batch_first, (L, H_in) unbatched,
    or the (sum of lengths, H_in) data of a PackedSequence."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected the input as a torch.Tensor or a PackedSequence, "
                        f"got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point input (float32, float64 or bfloat16), "
                        f"got {x.dtype}")
    if packed:
        expected_dims, layout = (2,), "(sum of lengths, H_in) in a PackedSequence"
    else:
        layout = "(N, L, H_in)" if batch_first else "(L, N, H_in)"
        expected_dims, layout = (2, 3), f"(L, H_in) unbatched or {layout} batched"
    if x.dim() not in expected_dims:
        raise ValueError(f"{name}: expected input of shape {layout}, got {x.dim()} dimensions "
                         f"with shape {shape_str(x.shape)}")
    if x.shape[-1] != input_size:
        raise ValueError(f"{name}: expected {input_size} input features (input_size), got "
                         f"{x.shape[-1]} in input of shape {shape_str(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name}: got an empty input of shape {shape_str(x.shape)}; "
                         "every sequence needs at least one step and the batch one sequence")


def check_step_input(name: str, x: Tensor, input_size: int) -> None:
    """x is a single-step cell's input: (N, H_in), or (H_in,) unbatched."""
    if isinstance(x, Tensor) and x.dim() not in (1, 2):
        raise ValueError(f"{name}: expected input of shape (N, H_in) or (H_in,) unbatched, got "
                         f"{x.dim()} dimensions with shape {shape_str(x.shape)}")
    check_input(name, x.unsqueeze(0) if isinstance(x, Tensor) and x.dim() == 1 else x,
                input_size, batch_first=False, packed=False)


def check_state(name: str, what: str, s, expected_shape: tuple, like: Tensor) -> Tensor:
    """s is an initial state h_0 or c_0; returns it, or raises naming the expected shape."""
    if not isinstance(s, Tensor):
        raise TypeError(f"{name}: expected {what} as a torch.Tensor, got {type(s).__name__}")
    if tuple(s.shape) != tuple(expected_shape):
        raise ValueError(f"{name}: expected {what} of shape {shape_str(expected_shape)} "
                         f"(num_layers * num_directions, N, H), got {shape_str(s.shape)}")
    if s.dtype != like.dtype:
        raise TypeError(f"{name}: expected {what} of dtype {like.dtype} like the input, "
                        f"got {s.dtype}")
    if s.device != like.device:
        raise ValueError(f"{name}: expected {what} on {like.device} like the input, "
                         f"got {s.device}")
    return s


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
