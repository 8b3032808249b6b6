"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``shared/data`` folder beside the repository (X/clone and X/shared in CI).

    Where it cannot be (the offline GPU check carries no data), ``PTYCHOMPI_SKIP_SHARED_DATA=1``
    skips the tests that need it; otherwise a missing folder fails them.
    """
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir() and os.environ.get("PTYCHOMPI_SKIP_SHARED_DATA") == "1":
        pytest.skip(f"no shared data at {path} (PTYCHOMPI_SKIP_SHARED_DATA=1)")
    return path
