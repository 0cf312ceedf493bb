"""Scratch tensors the backward pass reuses from one call to the next.

The gradient buffers of a sequence (dL/d pre-activations for every step, and the like) are
large, live only inside one backward call, and are needed again at the next call with the same
shapes. Allocating them anew each time lets the allocator hand back memory the operating system
must fault in page by page, which costs milliseconds per call; keeping one buffer per name and
thread avoids that. ``release()`` drops this thread's buffers.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: torch.dtype, device, zero: bool) -> Tensor:
    """A tensor of `shape` backed by this thread's buffer `name`; valid until the next call with
    the same name on this thread. Zero-filled when `zero`, else uninitialised."""
    pool = _local.__dict__.setdefault("pool", {})
    key = (name, dtype, torch.device(device))
    numel = math.prod(shape)
    buf = pool.get(key)
    if buf is None or buf.numel() < numel:
        buf = pool[key] = torch.empty(numel, dtype=dtype, device=device)
    t = buf[:numel].view(shape)
    return t.zero_() if zero else t


# what else holds per-thread scratch (the compiled engine adds its own when it loads)
_release_hooks: list = []


def on_release(hook) -> None:
    """Call hook() from ``release()``: a kept buffer pool below this module (the compiled
    engine's) registers here, so that this module imports nothing above it."""
    _release_hooks.append(hook)


def release() -> None:
    """Free this thread's scratch buffers (the compiled engine's too)."""
    _local.__dict__.pop("pool", None)
    for hook in _release_hooks:
        hook()
