"""Cross-tile sums: the exchange seam the engines see (DESIGN.md section 6)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .tiling import Tile


@dataclass
class ExchangeStats:
    """Communication accounting of one rank."""

    bytes_sent: int = 0
    seconds: float = 0.0
    halo_sums: int = 0
    reductions: int = 0


class SerialExchange:
    """The one-rank exchange: halo sums are the identity, reductions return their input."""

    rank = 0
    size = 1

    def __init__(self, tile: Tile, backend: Any) -> None:
        self.tile = tile
        self.backend = backend
        self.stats = ExchangeStats()

    def halo_sum(self, *arrays: Any) -> None:
        """Add, in place over each halo, the neighbours' arrays (shape (..., H, W) of the box)."""
        self.stats.halo_sums += 1

    def allreduce(self, value: Any, op: str = "sum") -> Any:
        """Sum (or max/min) over ranks of an array or scalar; same type back."""
        self.stats.reductions += 1
        return value

    def allgather(self, values: np.ndarray) -> np.ndarray:
        """Concatenation over ranks (in rank order) of 1-D host arrays."""
        return np.asarray(values)

    def check(self, error: BaseException | None = None) -> None:
        """Collective failure check: re-raise a problem seen on any rank on every rank."""
        if error is not None:
            raise error

    def timer(self) -> float:
        return time.perf_counter()
