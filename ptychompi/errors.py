"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


class PtychompiError(Exception):
    """An error caused by the user's input; printed as one line, no traceback."""


class ConfigError(PtychompiError):
    """A configuration key, value or combination is invalid."""


class DataError(PtychompiError):
    """An input data file is missing, unreadable or inconsistent."""


def squash(text: object, limit: int | None = None) -> str:
    """``text`` as one line: runs of white space (newlines too) folded to one space."""
    line = " ".join(str(text).split())
    return line if limit is None else line[:limit]


def os_reason(exc: OSError) -> str:
    """A failed file operation's reason in a few words ("No space left on device")."""
    import os  # noqa: PLC0415

    if exc.errno:
        return os.strerror(exc.errno)
    return squash(exc) or type(exc).__name__
