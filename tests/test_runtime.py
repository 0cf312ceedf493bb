"""keep_freed_memory: a freed block of tens of megabytes is reused without page faults."""

import resource
import sys

import pytest
import torch

from lstmkit.runtime import keep_freed_memory


def faults_to_refill(numel: int) -> int:
    a = torch.empty(numel)
    a.fill_(1.0)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = torch.empty(numel)
    b.fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_memory_is_reused_without_page_faults():
    assert keep_freed_memory() and keep_freed_memory()          # idempotent
    numel = 4 << 20                                              # 16 MB, 4,096 pages
    faults_to_refill(numel)                                      # the heap grows once
    assert faults_to_refill(numel) < 400
