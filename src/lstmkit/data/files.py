"""Reading local files with errors that name the file and where in it the problem is."""

from __future__ import annotations

from pathlib import Path

from .errors import DataError


def read_utf8(path: str | Path, what: str = "file") -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped).

    Raises DataError if path does not exist, is not a regular file, holds bytes that are not
    UTF-8 (the message gives the byte offset and line), or is empty. ``what`` names the kind of
    file in the messages, e.g. "text corpus".
    """
    path = Path(path)
    try:
        if not path.exists():
            raise DataError(f"{what} {path} does not exist")
        if not path.is_file():
            raise DataError(f"{what} {path} is not a file" +
                            (" but a directory" if path.is_dir() else ""))
        raw = path.read_bytes()
    except OSError as e:             # no permission, a name too long, a file gone meanwhile
        raise DataError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        hint = (" (it starts with a UTF-16 byte-order mark; save it as UTF-8)"
                if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "")
        raise DataError(f"{what} {path} is not valid UTF-8{hint}: byte 0x{raw[e.start]:02x} at "
                        f"byte offset {e.start} (line {line}): {e.reason}") from None
    text = text.removeprefix("\ufeff")
    if not text:
        raise DataError(f"{what} {path} is empty")
    return text


def temporary_file(folder: str | Path, prefix: str, suffix: str) -> tuple[int, str]:
    """(fd, path) of a new file in folder, as tempfile.mkstemp, but with the mode a plain
    open() would give (0666 less the umask, usually 0644) instead of mkstemp's 0600: the file
    is renamed into place and must read like any other file the user writes."""
    import os
    import tempfile

    fd, path = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, path


def _umask() -> int:
    """The process's umask. POSIX can only read it by setting it, so it is set and put back
    at once (lstmkit writes files from one thread)."""
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask
