"""Running `lstmkit` in-process for the fuzz and hostile-file tests (tests/test_fuzz.py,
tests/test_hostile_files.py): exit code and output of a command, the one-line error check, and
a listing of a folder tree to show what a command wrote."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from lstmkit.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*args) -> Result:
    """`lstmkit ARGS` in this process; any exception other than SystemExit propagates."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """Exit code 2 and exactly one stderr line "lstmkit: ..." holding every fragment."""
    assert result.code == 2, (result.code, result.out[-500:], result.err[-2000:])
    assert "Traceback" not in result.err, result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("lstmkit:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def tree(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every entry under root (symlinks not followed) with its kind, and for a regular file
    its size and sha256; top-level names in exclude are left out."""
    listing: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d not in exclude]
            filenames = [f for f in filenames if f not in exclude]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                listing[str(rel / name)] = ("file", path.stat().st_size,
                                            hashlib.sha256(path.read_bytes()).hexdigest())
            elif stat.S_ISLNK(mode):
                listing[str(rel / name)] = ("link", os.readlink(path))
            else:
                listing[str(rel / name)] = ("dir" if stat.S_ISDIR(mode) else "other",)
    return listing


def run_in(workspace: Path, run_folder: str, *args) -> Result:
    """run_cli with workspace as the working directory; asserts that nothing in workspace
    outside run_folder (a top-level name) was created, changed or removed."""
    before = tree(workspace, exclude=(run_folder,))
    with contextlib.chdir(workspace):
        result = run_cli(*args)
    assert tree(workspace, exclude=(run_folder,)) == before, "written outside the run folder"
    return result
