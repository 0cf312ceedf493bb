"""Process-wide settings the trainer makes for speed.

glibc returns large freed blocks to the operating system at once (each block over 128 KB is its
own mmap, and the heap top is trimmed), so a training step that allocates the same tens of
megabytes every time page-faults them in again every time: about 2,000 faults a step for the
Penn Treebank model, 10% of its time (benchmarks/bench_lm_step.py). keep_freed_memory() tells
glibc to keep freed memory for reuse: blocks up to 32 MB come from the heap, and up to 1 GB of
free heap is kept. The process's resident memory then stays near its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1          # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20      # glibc's largest accepted value on 64-bit
TRIM_THRESHOLD = 1 << 30

_done = False


def keep_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse; True if it took (Linux with glibc)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):              # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
