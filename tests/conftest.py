"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from lstmkit.engine import compiled

HAS_COMPILER = shutil.which(os.environ.get("CXX", "c++")) is not None


@pytest.fixture(scope="session")
def ext():
    """The built extension (one build per session, then the user's cache); skipped only when
    there is no C++ compiler."""
    if not HAS_COMPILER:
        pytest.skip("no C++ compiler: the compiled extension cannot be built here")
    assert compiled.available(), f"the compiled extension did not build: {compiled.build_error()}"
    return compiled._load()


@pytest.fixture(scope="session")
def hooks(ext):
    """Test hooks into the engine's building blocks (tests/csrc/engine_hooks.cpp): an extension
    of their own, built from the engine's headers, so that the engine's module carries none."""
    return compiled.build_extension("lstmkit_engine_hooks",
                                    [Path(__file__).parent / "csrc" / "engine_hooks.cpp"])


# A data test that cannot find the shared data sets skips with a reason that names them; the
# summary counts those skips on one line, so that a run without ../shared/data says so.
MISSING_DATA = re.compile(r"LSTMKIT_DATA|real data")


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    missing = sum(1 for report in skipped if isinstance(report.longrepr, tuple)
                  and MISSING_DATA.search(str(report.longrepr[2])))
    if missing:
        terminalreporter.write_line(
            f"lstmkit: {missing} data test{'s' if missing > 1 else ''} skipped: the shared data "
            "sets were not found (set LSTMKIT_DATA, e.g. to ../shared/data)", yellow=True)
