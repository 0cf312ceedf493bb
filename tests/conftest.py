"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
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

