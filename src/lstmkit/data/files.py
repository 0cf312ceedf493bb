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
