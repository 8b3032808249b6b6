"""Paths the GUI may touch: only those under its roots, resolved (links followed)."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.exceptions import HTTPException

__all__ = ["confine", "relative", "is_under"]


def is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine(roots: list[Path], given: str | None, *, must_exist: bool = True) -> Path:
    """``given`` (relative to the first root, or absolute) resolved inside one of ``roots``.

    Anything else (``..``, a link out, another absolute path, a NUL byte) is a 404, the same
    answer as a missing file, so the page cannot probe what exists outside.
    """
    if given is None or "\x00" in given:
        raise HTTPException(404, "not found")
    p = Path(given)
    p = p if p.is_absolute() else roots[0] / p
    try:
        p = p.resolve()
    except (OSError, RuntimeError):
        raise HTTPException(404, "not found") from None
    if not any(is_under(p, r) for r in roots):
        raise HTTPException(404, "not found")
    if must_exist and not p.exists():
        raise HTTPException(404, "not found")
    return p


def relative(path: Path, roots: list[Path]) -> str:
    """``path`` as the page names it: relative to the first root, else absolute."""
    try:
        return os.path.relpath(path, roots[0]) if is_under(path, roots[0]) else str(path)
    except ValueError:
        return str(path)
