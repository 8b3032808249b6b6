"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``shared/data`` folder beside the repository (X/clone and X/shared in CI)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"
