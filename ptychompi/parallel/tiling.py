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
    """One rank's part of the scan.

    ``halos[n]`` is the intersection of this tile's box with neighbour ``n``'s box: the pixels
    both ranks update and sum at every object exchange. ``grid`` is the process grid
    ``(Py, Px)`` and ``coords`` this rank's ``(row, col)`` cell in it.
    """

    rank: int
    indices: np.ndarray  # global frame indices owned, sorted
    box: Box  # bounding box of the owned windows
    neighbours: list[int] = field(default_factory=list)
    halos: dict[int, Box] = field(default_factory=dict)  # neighbour rank -> intersection
    grid: tuple[int, int] = (1, 1)
    coords: tuple[int, int] = (0, 0)

    @property
    def origin(self) -> tuple[int, int]:
        return (self.box.r0, self.box.c0)


def window_box(positions_px: np.ndarray, frame_shape: tuple[int, int]) -> Box:
    """Bounding box of the windows at ``positions_px`` (integer parts)."""
    top = np.floor(np.asarray(positions_px)).astype(np.int64)
    return Box(int(top[:, 0].min()), int(top[:, 1].min()),
               int(top[:, 0].max()) + frame_shape[0], int(top[:, 1].max()) + frame_shape[1])


def process_grid(size: int, extent: tuple[float, float]) -> tuple[int, int]:
    """``(Py, Px)`` with ``Py * Px == size``, the factor pair closest to square (as
    ``MPI.Compute_dims(size, 2)``), with more ranks along the longer of ``extent = (rows, cols)``
    (rows on a tie, as ``Compute_dims`` orders them)."""
    if size < 1:
        raise ConfigError(f"cannot decompose over {size} ranks")
    small = max(a for a in range(1, int(np.sqrt(size)) + 1) if size % a == 0)
    large = size // small
    return (small, large) if extent[1] > extent[0] else (large, small)


def _balanced(n: int, parts: int) -> np.ndarray:
    """Sizes of ``parts`` nearly equal chunks of ``n`` (the first ``n % parts`` one larger)."""
    return np.full(parts, n // parts, np.int64) + (np.arange(parts) < n % parts)


def decompose(positions_px: np.ndarray, frame_shape: tuple[int, int], size: int,
              grid: tuple[int, int] | None = None) -> list[Tile]:
    """Split the scan into ``size`` tiles on a ``Py x Px`` process grid (DESIGN.md section 6).

    Positions are sorted by row (then column) and cut into ``Py`` row groups, each group sorted
    by column (then row) and cut into ``Px`` tiles; the cuts follow the quantiles of the
    coordinates so that every tile owns the same number of positions, +-1, for any scan
    pattern. Rank ``r`` sits at grid cell ``(r // Px, r % Px)``. Each tile's box is the bounding
    box of its windows; its neighbours are the ranks whose boxes intersect it (diagonals too)
    and its halos those intersections. A pure function of its arguments: every rank calls it
    and gets the same list, with no communication.

    ``grid = (Py, Px)`` overrides the automatic grid and must multiply to ``size``.
    """
    pos = np.asarray(positions_px, dtype=np.float64).reshape(-1, 2)
    n = len(pos)
    if size < 1:
        raise ConfigError(f"cannot decompose over {size} ranks")
    if n < size:
        raise ConfigError(f"{n} positions cannot be split over {size} ranks; "
                          f"use at most {n} ranks")
    if not np.all(np.isfinite(pos)):
        raise ConfigError("scan positions hold NaN or infinity; cannot decompose the scan")
    if grid is None:
        extent = np.ptp(pos, axis=0) if n else np.zeros(2)
        py, px = process_grid(size, (float(extent[0]), float(extent[1])))
    else:
        if len(grid) != 2 or int(grid[0]) < 1 or int(grid[1]) < 1 \
                or int(grid[0]) * int(grid[1]) != size:
            raise ConfigError(f"parallel.grid = {list(grid)} does not multiply to the "
                              f"{size} ranks; give [rows, cols] with rows * cols = {size}")
        py, px = int(grid[0]), int(grid[1])

    counts = _balanced(n, size).reshape(py, px)  # positions per rank, exact +-1 balance
    by_row = np.lexsort((pos[:, 1], pos[:, 0]))  # stable: row, then column
    row_cuts = np.concatenate(([0], np.cumsum(counts.sum(axis=1))))
    owned: list[np.ndarray] = []
    for i in range(py):
        group = by_row[row_cuts[i]:row_cuts[i + 1]]
        group = group[np.lexsort((pos[group, 0], pos[group, 1]))]  # column, then row
        col_cuts = np.concatenate(([0], np.cumsum(counts[i])))
        owned += [np.sort(group[col_cuts[j]:col_cuts[j + 1]]) for j in range(px)]

    tiles = [Tile(r, idx, window_box(pos[idx], frame_shape), grid=(py, px),
                  coords=(r // px, r % px)) for r, idx in enumerate(owned)]
    boxes = np.array([[t.box.r0, t.box.c0, t.box.r1, t.box.c1] for t in tiles], np.int64)
    for a in tiles:  # vectorised over b: O(size) numpy work per rank
        r0 = np.maximum(boxes[:, 0], a.box.r0)
        c0 = np.maximum(boxes[:, 1], a.box.c0)
        r1 = np.minimum(boxes[:, 2], a.box.r1)
        c1 = np.minimum(boxes[:, 3], a.box.c1)
        hit = (r0 < r1) & (c0 < c1)
        hit[a.rank] = False
        for b in np.flatnonzero(hit):
            a.neighbours.append(int(b))
            a.halos[int(b)] = Box(int(r0[b]), int(c0[b]), int(r1[b]), int(c1[b]))
    return tiles
