"""The errors the data package raises.

``DataError`` is a ``ValueError``: the data on disk (or a download) is not what a loader needs.
Each message names the file and, where it helps, the line, byte offset, row or column.
"""

from __future__ import annotations


class DataError(ValueError):
    """A data file is missing, malformed, or does not match its recorded checksum."""


class MissingDataError(DataError):
    """A data set's files were not found in any of the places looked in."""


class ChecksumError(DataError):
    """A downloaded file's sha256 differs from the one recorded in the registry."""


def shorten(value, limit: int = 60) -> str:
    """repr(value) for a message, cut to about limit characters: a value read from a file may
    be a line of megabytes."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
