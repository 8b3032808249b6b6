"""Reconstruction engines: ePIE, DM and LSQML behind one contract."""

from __future__ import annotations

from .base import Engine, Schedule, TileData
from .dm import DifferenceMap
from .epie import EPIE
from .lsqml import LSQML

ENGINES: dict[str, type[Engine]] = {"epie": EPIE, "dm": DifferenceMap, "lsqml": LSQML}

__all__ = ["ENGINES", "Engine", "Schedule", "TileData", "EPIE", "DifferenceMap", "LSQML"]
