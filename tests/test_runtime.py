"""keep_freed_memory: a freed block of tens of megabytes stays in the heap for reuse.

What is checked is glibc's own account (mallinfo2), not a page-fault count: how many faults a
refill takes depends on the kernel (transparent huge pages, what else the process maps), while
where malloc put a block and what it kept after free does not."""

import ctypes
import ctypes.util
import sys

import pytest
import torch

from lstmkit.runtime import keep_freed_memory


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def mallinfo2():
    """glibc's malloc statistics: hblkhd bytes in blocks of their own (mmap), fordblks free
    bytes kept in the heap."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc 2.33 or later (mallinfo2)")
    fn.restype = MallInfo2
    return fn()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_memory_stays_in_the_heap_for_reuse():
    assert keep_freed_memory() and keep_freed_memory()          # idempotent
    nbytes = 16 << 20                                            # 16 MB, 4,096 pages
    slack = 64 << 10                                             # alignment, bookkeeping
    mapped = mallinfo2().hblkhd
    block = torch.empty(nbytes // 4)
    block.fill_(1.0)
    held = mallinfo2()
    assert held.hblkhd - mapped < nbytes                        # from the heap, not an mmap
    del block
    kept = mallinfo2().fordblks
    assert kept - held.fordblks >= nbytes - slack             # kept, not trimmed: no faults
    again = torch.empty(nbytes // 4)                            # the next block reuses it
    assert kept - mallinfo2().fordblks >= nbytes - slack
    del again
