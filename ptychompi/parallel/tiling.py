"""Spatial decomposition of a scan over MPI ranks (DESIGN.md section 6)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class Box:
    """Half-open pixel rectangle ``[r0, r1) x [c0, c1)`` on the global object grid."""

    r0: int
    c0: int
    r1: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.r1 - self.r0, self.c1 - self.c0)

    def intersect(self, other: Box) -> Box | None:
        r0, c0 = max(self.r0, other.r0), max(self.c0, other.c0)
        r1, c1 = min(self.r1, other.r1), min(self.c1, other.c1)
        return Box(r0, c0, r1, c1) if r0 < r1 and c0 < c1 else None

    def slices(self, origin: tuple[int, int] = (0, 0)) -> tuple[slice, slice]:
        """Slices of this box in an array whose [0, 0] sits at ``origin``."""
        return (slice(self.r0 - origin[0], self.r1 - origin[0]),
                slice(self.c0 - origin[1], self.c1 - origin[1]))


@dataclass
class Tile:
    """One rank's part of the scan."""

    rank: int
    indices: np.ndarray  # global frame indices owned, sorted
    box: Box  # bounding box of the owned windows
    neighbours: list[int] = field(default_factory=list)
    halos: dict[int, Box] = field(default_factory=dict)  # neighbour rank -> intersection

    @property
    def origin(self) -> tuple[int, int]:
        return (self.box.r0, self.box.c0)


def window_box(positions_px: np.ndarray, frame_shape: tuple[int, int]) -> Box:
    """Bounding box of the windows at ``positions_px`` (integer parts)."""
    top = np.floor(np.asarray(positions_px)).astype(np.int64)
    return Box(int(top[:, 0].min()), int(top[:, 1].min()),
               int(top[:, 0].max()) + frame_shape[0], int(top[:, 1].max()) + frame_shape[1])


def decompose(positions_px: np.ndarray, frame_shape: tuple[int, int], size: int,
              grid: tuple[int, int] | None = None) -> list[Tile]:
    """Split the scan into ``size`` tiles (placeholder: one rank only)."""
    if size != 1:
        raise ConfigError("multi-rank tiling is not available yet")
    idx = np.arange(len(positions_px))
    return [Tile(0, idx, window_box(positions_px, frame_shape))]
