"""Where data lives and how it gets there.

A data directory holds one folder per data set (``names/``, ``ptb/``, ...), each with the files
the registry lists. The directory is, in this order of preference:

1. the ``data_dir`` argument (the command line's ``--data-dir``; then nowhere else),
2. the environment variable ``LSTMKIT_DATA``,
3. ``../shared/data`` seen from the current directory, then from the project's folder (where
   it exists: the layout scripts/demo.sh and scripts/test.sh look for),
4. a per-user cache, ``$XDG_CACHE_HOME/lstmkit`` or ``~/.cache/lstmkit``.

``require`` (``locate``: also how it was found) finds a data set in the first of these places
that has all its files; ``fetch`` downloads one into the first place, checking every file's
sha256 and writing each file atomically, so an interrupted or corrupted download never leaves
a file that looks complete.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ChecksumError, DataError, MissingDataError
from .files import temporary_file
from .registry import DATASETS, DataFile, Dataset

ENV_VAR = "LSTMKIT_DATA"
_CHUNK = 1 << 16
_TIMEOUT = 60.0  # seconds without data before a download is given up


def _cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "lstmkit"


def _places(explicit: str | Path | None) -> list[tuple[str, Path]]:
    """The data directories to look in, best first, each with how it was chosen."""
    if explicit is not None:                 # asked for by name: look nowhere else
        return [("--data-dir", Path(explicit).expanduser().absolute())]
    places = []
    if os.environ.get(ENV_VAR):
        places.append((ENV_VAR, Path(os.environ[ENV_VAR])))
    places += _shared_folders()
    places.append(("cache", _cache_dir()))
    unique: dict[Path, str] = {}
    for how, path in places:
        unique.setdefault(path.expanduser().absolute(), how)
    return [(how, path) for path, how in unique.items()]


def _shared_folders() -> list[tuple[str, Path]]:
    """``../shared/data`` from the current directory and from the project's folder (a source
    checkout: the folder holding pyproject.toml), those that exist."""
    project = Path(__file__).resolve().parents[3]
    bases = [("../shared/data from the current directory", Path.cwd())]
    if (project / "pyproject.toml").is_file():
        bases.append(("../shared/data beside the project", project))
    return [(how, (base / ".." / "shared" / "data").resolve()) for how, base in bases
            if (base / ".." / "shared" / "data").is_dir()]


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory (where ``fetch`` downloads to): ``explicit`` if given, else
    ``$LSTMKIT_DATA``, else ``../shared/data`` where it exists, else the user cache."""
    return _places(explicit)[0][1]


def dataset(name: str) -> Dataset:
    """The registry entry of data set ``name``; ValueError naming the known ones otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def require(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder of data set ``name``: in ``data_dir`` if given, else in the first place
    (``$LSTMKIT_DATA``, ``../shared/data``, the user cache) that has all its files.

    Raises MissingDataError (one line) naming, for every place looked in, the files missing
    there, and how to get the data.
    """
    return locate(name, data_dir)[0]


def locate(name: str, data_dir: str | Path | None = None) -> tuple[Path, str]:
    """(folder, how it was found) of data set ``name``, e.g. (.../names, "LSTMKIT_DATA"); see
    ``require``."""
    files = [f.name for f in dataset(name).files]
    looked = []
    for how, base in _places(data_dir):
        folder = base / name
        if not folder.is_dir():
            looked.append(f"{folder} ({how}): no such folder")
            continue
        missing = [f for f in files if not (folder / f).is_file()]
        if not missing:
            return folder, how
        looked.append(f"{folder} ({how}): missing {', '.join(missing)}")
    if data_dir is None and not os.environ.get(ENV_VAR):
        looked.append(f"{ENV_VAR} is not set")
    target = _places(data_dir)[0][1]
    raise MissingDataError(
        f"data set {name!r} not found; it needs {', '.join(files)}. Looked in: "
        + "; ".join(looked) + ". "
        f"Get it with `lstmkit data fetch {name}` (downloads into {target}), or point to a "
        f"directory that holds {name}/ with `--data-dir DIR` or `{ENV_VAR}=DIR`.")


def obtain(name: str, data_dir: str | Path | None = None, log=None) -> tuple[Path, str]:
    """(folder, how it was found) of data set ``name``, as ``locate``; when it is nowhere and
    no ``data_dir`` was named, downloaded first into ``data_dir()`` (the way scripts/demo.sh
    gets it), after ``log`` says so. A failed download raises DataError saying where it
    looked and why the download failed."""
    try:
        return locate(name, data_dir)
    except MissingDataError as missing:
        if data_dir is not None:                # asked for a folder by name: not filled behind
            raise
        if log:                                 # the user's back
            log(f"data set {name} not found; downloading it into {_places(None)[0][1]}")
        try:
            fetch(name)
        except DataError as e:
            raise DataError(f"{missing} The download failed: {e}") from None
        return locate(name)


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder of data set ``name`` (as ``require``) after checking every file's sha256.

    Raises ChecksumError listing each file whose sum differs from the registry's.
    """
    folder = require(name, data_dir)
    bad = []
    for f in dataset(name).files:
        got = sha256_file(folder / f.name)
        if got != f.sha256:
            bad.append(f"  {folder / f.name}: expected sha256 {f.sha256}, got {got}")
    if bad:
        raise ChecksumError(f"data set {name!r} has files that differ from the registry:\n"
                            + "\n".join(bad) + f"\nRe-download with `lstmkit data fetch {name} "
                            "--force`.")
    return folder


def fetch(name: str, data_dir: str | Path | None = None, force: bool = False,
          mirror: str | None = None) -> Path:
    """Download data set ``name`` into ``data_dir(data_dir)/name`` and return that folder.

    Files already there with the right sha256 are kept unless ``force``. Every downloaded file
    is checked against the registry's sha256 before it is moved into place; on a mismatch a
    ChecksumError names the file and both sums, and the file is not kept. ``mirror`` is a base
    URL (``https://...``, ``file:///...``) to download from instead of the original locations:
    each file is then read from ``mirror/<last part of its original URL>``.
    """
    entry = dataset(name)
    folder = _places(data_dir)[0][1] / name
    todo = [f for f in entry.files if force or not _has(folder / f.name, f.sha256)]
    if not todo:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    by_url: dict[str, list[DataFile]] = {}
    for f in todo:
        by_url.setdefault(f.url, []).append(f)
    for url, files in by_url.items():
        source = url if mirror is None else f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}"
        if files[0].member is None:
            for f in files:
                _write_verified(folder / f.name, _download(source), f, source)
        else:
            _fetch_from_zip(source, files, folder)
    return folder


def _has(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _download(url: str) -> Iterator[bytes]:
    """The bytes at url, in chunks; network trouble becomes a DataError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            while chunk := response.read(_CHUNK):
                yield chunk
    except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
        raise DataError(f"could not download {url}: {e}") from e


def _write_verified(dest: Path, chunks, file: DataFile, source: str) -> None:
    """Write chunks to dest atomically if their sha256 is file.sha256; else leave no trace.

    The bytes go to a temporary file in dest's folder, are flushed to disk, and only then
    renamed over dest, so dest is either the old file or the complete, checked new one.
    """
    fd, tmp = temporary_file(dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != file.sha256:
            raise ChecksumError(f"checksum mismatch for {dest.name} from {source}: expected "
                                f"sha256 {file.sha256}, got {got}; the file was not saved")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def _fetch_from_zip(source: str, files: list[DataFile], folder: Path) -> None:
    """Download the zip archive at source once and extract the members ``files`` name."""
    fd, archive = tempfile.mkstemp(prefix=".download.", suffix=".zip", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _download(source):
                out.write(chunk)
        try:
            with zipfile.ZipFile(archive) as z:
                members = set(z.namelist())
                for f in files:
                    if f.member not in members:
                        raise DataError(f"archive {source} has no member {f.member}")
                    with z.open(f.member) as m:
                        chunks = iter(functools.partial(m.read, _CHUNK), b"")
                        _write_verified(folder / f.name, chunks, f, f"{source} ({f.member})")
        except zipfile.BadZipFile as e:
            raise DataError(f"{source} is not a valid zip archive: {e}") from e
    finally:
        Path(archive).unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable (POSIX; elsewhere a no-op)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
