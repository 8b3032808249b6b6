"""The one constructor of config fields: a default with its help text and constraints.

Every section (:mod:`ptychompi.config`, :mod:`ptychompi.config.engines`) declares its keys with
:func:`opt`; validation, the commented default file, the GUI's form and the README's reference
are all read from the field metadata it stores.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def opt(default: Any, help: str, *, choices: tuple | None = None, low: float | None = None,
        high: float | None = None, factory: Any = None) -> Any:
    """A config field with its help text and constraints."""
    meta = {"help": help, "choices": choices, "low": low, "high": high}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)
