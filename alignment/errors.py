"""The one error type users see: a clear line, exit code 2, no traceback."""

from __future__ import annotations


class SafealignError(Exception):
    """A problem with the user's input or environment, reported as one line with exit code 2.

    Raise it with a message that names what is wrong (file, row, field, key) and what to do.
    Data builders and reward modules raise it too, so every command fails the same way.
    """

    exit_code = 2


def where(path: object, row: int | None = None, field: str | None = None) -> str:
    """Format a location for error messages: ``file.csv, row 12, field 'text'``.

    >>> where("data.csv", 12, "text")
    "data.csv, row 12, field 'text'"
    """
    parts = [str(path)]
    if row is not None:
        parts.append(f"row {row}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts)
