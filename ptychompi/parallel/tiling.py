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


def _split(pos: np.ndarray, py: int, px: int) -> list[np.ndarray]:
    """Owned indices per rank of the quantile split on a ``py x px`` grid (row-major)."""
    counts = _balanced(len(pos), py * px).reshape(py, px)  # exact +-1 balance
    by_row = np.lexsort((pos[:, 1], pos[:, 0]))  # stable: row, then column
    row_cuts = np.concatenate(([0], np.cumsum(counts.sum(axis=1))))
    owned: list[np.ndarray] = []
    for i in range(py):
        group = by_row[row_cuts[i]:row_cuts[i + 1]]
        group = group[np.lexsort((pos[group, 0], pos[group, 1]))]  # column, then row
        col_cuts = np.concatenate(([0], np.cumsum(counts[i])))
        owned += [np.sort(group[col_cuts[j]:col_cuts[j + 1]]) for j in range(px)]
    return owned


def _box_array(pos: np.ndarray, owned: list[np.ndarray],
               frame_shape: tuple[int, int]) -> np.ndarray:
    """``(size, 4)`` int64 ``[r0, c0, r1, c1]`` window bounding boxes of the owned sets."""
    top = np.floor(pos).astype(np.int64)
    out = np.empty((len(owned), 4), np.int64)
    for r, idx in enumerate(owned):
        t = top[idx]
        out[r] = (t[:, 0].min(), t[:, 1].min(),
                  t[:, 0].max() + frame_shape[0], t[:, 1].max() + frame_shape[1])
    return out


def _overlap_cost(boxes: np.ndarray) -> tuple[int, int, int]:
    """``(max per-rank overlap area, total overlap area, max overlapping boxes)`` of ``boxes``.

    The overlap of two boxes is the most a halo between them can be, so these bound the bytes
    a rank sends per halo sum (the maximum sets the pace), the total traffic and the messages.
    """
    worst = total = most = 0
    for a in range(len(boxes)):  # O(size) numpy work per box
        h = np.minimum(boxes[:, 2], boxes[a, 2]) - np.maximum(boxes[:, 0], boxes[a, 0])
        w = np.minimum(boxes[:, 3], boxes[a, 3]) - np.maximum(boxes[:, 1], boxes[a, 1])
        area = np.clip(h, 0, None) * np.clip(w, 0, None)
        area[a] = 0
        s = int(area.sum())
        worst, total, most = max(worst, s), total + s, max(most, int(np.count_nonzero(area)))
    return worst, total, most


def choose_grid(positions_px: np.ndarray, frame_shape: tuple[int, int],
                size: int) -> tuple[int, int]:
    """The ``(Py, Px)`` process grid for this scan: the factor pair of ``size`` whose tiles
    overlap least.

    Every factor pair is tried with the same quantile split :func:`decompose` makes; the
    winner has the smallest per-rank overlap area (the halo a rank sends each exchange), then
    the smallest total overlap, the fewest neighbours, and tiles closest to the square
    :func:`process_grid` would give. An elongated scan thus gets more ranks along its long
    side (a 4 x 64 strip on 16 ranks is cut 1 x 16, not 4 x 4). A pure function: every rank
    computes the same grid without communication.
    """
    pos = np.asarray(positions_px, dtype=np.float64).reshape(-1, 2)
    if size < 1:
        raise ConfigError(f"cannot decompose over {size} ranks")
    extent = np.ptp(pos, axis=0) if len(pos) else np.zeros(2)
    square = process_grid(size, (float(extent[0]), float(extent[1])))
    if len(pos) < size or not np.all(np.isfinite(pos)):
        return square  # decompose reports the problem
    best: tuple | None = None
    for py in (d for d in range(1, size + 1) if size % d == 0):
        px = size // py
        cost = _overlap_cost(_box_array(pos, _split(pos, py, px), frame_shape))
        key = (*cost, abs(np.log(py / px) - np.log(square[0] / square[1])), -py)
        if best is None or key < best[0]:
            best = (key, (py, px))
    return square if best is None else best[1]


def _true_halo(top_a: np.ndarray, top_b: np.ndarray, inter: Box,
               frame_shape: tuple[int, int]) -> Box | None:
    """Bounding box of the pixels both sets of windows cover inside ``inter`` (or ``None``).

    Each side's windows are clipped to ``inter`` (the boxes' intersection) and bounded; the
    halo is the intersection of the two bounds. It contains every pixel a window of each side
    covers, so the halo sum stays exact, and excludes box corners only one side lights.
    """
    fh, fw = frame_shape

    def bound(top: np.ndarray) -> Box | None:
        r0 = np.maximum(top[:, 0], inter.r0)
        c0 = np.maximum(top[:, 1], inter.c0)
        r1 = np.minimum(top[:, 0] + fh, inter.r1)
        c1 = np.minimum(top[:, 1] + fw, inter.c1)
        hit = (r0 < r1) & (c0 < c1)
        if not hit.any():
            return None
        return Box(int(r0[hit].min()), int(c0[hit].min()), int(r1[hit].max()),
                   int(c1[hit].max()))

    a, b = bound(top_a), bound(top_b)
    return None if a is None or b is None else a.intersect(b)


def decompose(positions_px: np.ndarray, frame_shape: tuple[int, int], size: int,
              grid: tuple[int, int] | None = None) -> list[Tile]:
    """Split the scan into ``size`` tiles on a ``Py x Px`` process grid (DESIGN.md section 6).

    Positions are sorted by row (then column) and cut into ``Py`` row groups, each group sorted
    by column (then row) and cut into ``Px`` tiles; the cuts follow the quantiles of the
    coordinates so that every tile owns the same number of positions, +-1, for any scan
    pattern. Rank ``r`` sits at grid cell ``(r // Px, r % Px)``; the grid is the one of
    :func:`choose_grid` (the least overlap for the scan's shape). Each tile's box is the
    bounding box of its windows. Its halo with another tile is the bounding box of the pixels
    that windows of both tiles cover (never wider than the boxes' intersection, narrower where
    a box corner is lit by one side only); its neighbours are the tiles it shares a non-empty
    halo with (diagonals too). A pure function of its arguments: every rank calls it and gets
    the same list, with no communication.

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
        py, px = choose_grid(pos, frame_shape, size)
    else:
        if len(grid) != 2 or int(grid[0]) < 1 or int(grid[1]) < 1 \
                or int(grid[0]) * int(grid[1]) != size:
            raise ConfigError(f"parallel.grid = {list(grid)} does not multiply to the "
                              f"{size} ranks; give [rows, cols] with rows * cols = {size}")
        py, px = int(grid[0]), int(grid[1])

    owned = _split(pos, py, px)
    boxes = _box_array(pos, owned, frame_shape)
    tiles = [Tile(r, idx, Box(*(int(v) for v in boxes[r])), grid=(py, px),
                  coords=(r // px, r % px)) for r, idx in enumerate(owned)]
    top = np.floor(pos).astype(np.int64)
    for a in tiles:  # vectorised over b: O(size) numpy work per rank
        r0 = np.maximum(boxes[:, 0], a.box.r0)
        c0 = np.maximum(boxes[:, 1], a.box.c0)
        r1 = np.minimum(boxes[:, 2], a.box.r1)
        c1 = np.minimum(boxes[:, 3], a.box.c1)
        hit = (r0 < r1) & (c0 < c1)
        hit[: a.rank + 1] = False  # each pair once, from its lower rank
        for b in np.flatnonzero(hit):
            inter = Box(int(r0[b]), int(c0[b]), int(r1[b]), int(c1[b]))
            halo = _true_halo(top[a.indices], top[tiles[b].indices], inter, frame_shape)
            if halo is not None:
                a.halos[int(b)] = halo
                tiles[b].halos[a.rank] = halo
    for t in tiles:
        t.neighbours = sorted(t.halos)
        t.halos = {k: t.halos[k] for k in t.neighbours}
    return tiles
