"""keep_freed_memory: memory a training step frees stays in the heap, so the next step's
allocations of the same sizes fault no pages in.

Each pattern runs in a fresh interpreter: the heap a long test session leaves behind (its
fragments, glibc's adapted thresholds) would otherwise decide the outcome."""

import subprocess
import sys

import pytest

from lstmkit.runtime import keep_freed_memory

STEP = """
import resource, sys, torch
from lstmkit.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(1 << 20).fill_(1.0) for _ in range(16)]    # one step: 16 x 4 MB
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[10:]))
"""


def steady_faults(mode: str) -> int:
    """Page faults of the last 10 of 20 steps that each allocate, fill and free 64 MB."""
    out = subprocess.run([sys.executable, "-c", STEP, mode], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_memory_is_reused_without_page_faults():
    assert keep_freed_memory() and keep_freed_memory()          # idempotent
    kept = steady_faults("keep")
    # By default glibc trims the freed 64 MB, in most runs at once, and faults it in again every
    # step (163,530 faults in 10 steps here); how often depends on where the heap lands, so the
    # default is not asserted. Kept, the steps reuse it.
    assert kept < 10 * (64 << 20) // 4096 // 20, kept
