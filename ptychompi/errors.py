"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


class PtychompiError(Exception):
    """An error caused by the user's input; printed as one line, no traceback."""


class ConfigError(PtychompiError):
    """A configuration key, value or combination is invalid."""


class DataError(PtychompiError):
    """An input data file is missing, unreadable or inconsistent."""
