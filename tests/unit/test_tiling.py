"""Serial tests of the scan decomposition (ptychompi.parallel.tiling)."""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi.errors import ConfigError
from ptychompi.parallel.assemble import scatter_object
from ptychompi.parallel.tiling import Box, choose_grid, decompose, process_grid, window_box

FRAME = (32, 32)


def raster(rows: int = 20, cols: int = 20, step: float = 10.0, jitter: float = 2.0,
           seed: int = 0) -> np.ndarray:
    r, c = np.meshgrid(np.arange(rows) * step, np.arange(cols) * step, indexing="ij")
    pos = np.stack([r.ravel(), c.ravel()], axis=1)
    pos += np.random.default_rng(seed).uniform(-jitter, jitter, pos.shape)
    return pos - pos.min(axis=0) + 5.0


def spiral(n: int = 300, spacing: float = 6.0) -> np.ndarray:
    k = np.arange(n)
    radius, theta = spacing * np.sqrt(k), k * np.deg2rad(137.508)
    pos = np.stack([radius * np.sin(theta), radius * np.cos(theta)], axis=1)
    return pos - pos.min(axis=0) + 3.0


def uniform(n: int = 250, extent: float = 200.0, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, extent, (n, 2))


SCANS = {"raster": raster(), "spiral": spiral(), "random": uniform()}


def coverage(pos: np.ndarray, shape: tuple[int, int] = (300, 300)) -> np.ndarray:
    """Pixels lit by the windows at ``pos`` (boolean mask of the global grid)."""
    mask = np.zeros(shape, bool)
    for r, c in np.floor(pos).astype(int):
        mask[r:r + FRAME[0], c:c + FRAME[1]] = True
    return mask


@pytest.mark.parametrize("size", range(1, 9))
@pytest.mark.parametrize("scan", SCANS)
def test_decomposition_invariants(scan: str, size: int) -> None:
    pos = SCANS[scan]
    tiles = decompose(pos, FRAME, size)
    assert [t.rank for t in tiles] == list(range(size))
    # every position in exactly one tile, indices sorted
    every = np.concatenate([t.indices for t in tiles])
    assert np.array_equal(np.sort(every), np.arange(len(pos)))
    assert all(np.all(np.diff(t.indices) > 0) for t in tiles)
    # balance: the same number of positions +-1
    counts = [len(t.indices) for t in tiles]
    assert max(counts) - min(counts) <= 1
    # grid and cells
    py, px = tiles[0].grid
    assert py * px == size
    assert sorted(t.coords for t in tiles) == [(i, j) for i in range(py) for j in range(px)]
    for t in tiles:
        # the box is the bounding box of the tile's windows and contains each of them
        assert t.box == window_box(pos[t.indices], FRAME)
        for r, c in np.floor(pos[t.indices]).astype(int):
            assert t.box.r0 <= r and r + FRAME[0] <= t.box.r1
            assert t.box.c0 <= c and c + FRAME[1] <= t.box.c1
        # neighbours: exactly the ranks whose windows light a pixel this tile's windows light;
        # halos hold every such pixel and stay inside the boxes' intersection
        lit = coverage(pos[t.indices])
        expect = [u.rank for u in tiles
                  if u.rank != t.rank and np.any(lit & coverage(pos[u.indices]))]
        assert t.neighbours == expect
        assert set(t.halos) == set(t.neighbours)
        for n, halo in t.halos.items():
            assert t.rank in tiles[n].neighbours  # symmetric neighbours
            assert tiles[n].halos[t.rank] == halo  # symmetric halos
            inter = t.box.intersect(tiles[n].box)
            assert inter is not None and halo.intersect(inter) == halo
            both = lit & coverage(pos[tiles[n].indices])
            inside = np.zeros_like(both)
            inside[halo.slices()] = True
            assert both.any() and not np.any(both & ~inside)


@pytest.mark.parametrize("scan", SCANS)
def test_quantile_split_is_spatial(scan: str) -> None:
    """Row groups are ordered by row and tiles in a row group by column (quantile cuts)."""
    pos = SCANS[scan]
    tiles = decompose(pos, FRAME, 6, grid=(2, 3))
    for t in tiles:
        for u in tiles:
            if t.coords[0] < u.coords[0]:
                assert pos[t.indices, 0].max() <= pos[u.indices, 0].min()
            if t.coords[0] == u.coords[0] and t.coords[1] < u.coords[1]:
                assert pos[t.indices, 1].max() <= pos[u.indices, 1].min()


def test_deterministic_and_pure() -> None:
    pos = SCANS["spiral"]
    a, b = decompose(pos, FRAME, 5), decompose(pos.copy(), FRAME, 5)
    for s, t in zip(a, b, strict=True):
        assert np.array_equal(s.indices, t.indices)
        assert (s.box, s.neighbours, s.halos, s.grid) == (t.box, t.neighbours, t.halos, t.grid)


@pytest.mark.parametrize("size", [2, 3, 6, 8])
def test_grid_follows_scan_aspect(size: int) -> None:
    wide = raster(rows=10, cols=40, jitter=0.0)  # 10 rows x 40 columns: wider than tall
    py, px = decompose(wide, FRAME, size)[0].grid
    assert px > py and py * px == size
    tall = wide[:, ::-1]
    py, px = decompose(tall, FRAME, size)[0].grid
    assert py > px


@pytest.mark.parametrize("size", [4, 8, 16])
def test_elongated_scan_gets_a_strip_grid(size: int) -> None:
    """A 4 x 64 strip is cut along its length, with less halo than the square grid's."""
    strip = raster(rows=4, cols=64, jitter=0.0)
    tiles = decompose(strip, FRAME, size)
    assert tiles[0].grid == (1, size)

    def halo_area(ts: list) -> int:
        return sum(int(np.prod(h.shape)) for t in ts for h in t.halos.values())

    square = process_grid(size, tuple(np.ptp(strip, axis=0)))
    assert square != (1, size)
    assert halo_area(tiles) < halo_area(decompose(strip, FRAME, size, grid=square))
    tall = decompose(strip[:, ::-1], FRAME, size)
    assert tall[0].grid == (size, 1)


def test_choose_grid_square_scan_stays_square() -> None:
    sq = raster(rows=12, cols=12, jitter=0.0)
    assert choose_grid(sq, FRAME, 4) == (2, 2)
    assert choose_grid(sq, FRAME, 16) == (4, 4)


def test_halos_are_the_true_overlap() -> None:
    """On an irregular scan some halos are narrower than the boxes' intersection."""
    pos = SCANS["random"]
    tiles = decompose(pos, FRAME, 8)
    narrower = [(t.rank, n) for t in tiles for n, h in t.halos.items()
                if h != t.box.intersect(tiles[n].box)]
    assert narrower
    # two boxes that touch only where one side lights nothing are not neighbours
    zigzag = np.array([[0.0, 0.0], [60.0, 20.0], [0.0, 40.0], [60.0, 60.0]])
    far = decompose(zigzag, (32, 32), 2, grid=(1, 2))
    assert far[0].box.intersect(far[1].box) is not None
    assert all(not t.neighbours for t in far)


def test_process_grid_closest_to_square() -> None:
    assert process_grid(4, (1.0, 1.0)) == (2, 2)
    assert process_grid(8, (1.0, 2.0)) == (2, 4)
    assert process_grid(8, (2.0, 1.0)) == (4, 2)
    assert process_grid(12, (1.0, 3.0)) == (3, 4)
    assert process_grid(7, (1.0, 3.0)) == (1, 7)


def test_grid_override() -> None:
    tiles = decompose(SCANS["raster"], FRAME, 4, grid=(1, 4))
    assert tiles[0].grid == (1, 4)
    assert [t.coords for t in tiles] == [(0, 0), (0, 1), (0, 2), (0, 3)]


@pytest.mark.parametrize("grid", [(2, 3), (2, 1), (0, 4), (3,)])
def test_bad_grid_is_config_error(grid: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="grid"):
        decompose(SCANS["raster"], FRAME, 4, grid=grid)


def test_too_few_positions() -> None:
    with pytest.raises(ConfigError, match="5 positions cannot be split over 8 ranks; "
                                          "use at most 5 ranks"):
        decompose(SCANS["raster"][:5], FRAME, 8)
    assert len(decompose(SCANS["raster"][:5], FRAME, 5)) == 5


def test_three_tiles_cover_corners() -> None:
    """On a 2x2 grid the centre pixels lie in all four boxes (the halo sum must add all)."""
    tiles = decompose(raster(jitter=0.0), FRAME, 4)
    assert tiles[0].grid == (2, 2)
    cover = np.zeros((300, 300), int)
    for t in tiles:
        cover[t.box.slices()] += 1
    assert cover.max() == 4


def test_scatter_object_slices_box() -> None:
    tiles = decompose(SCANS["raster"], FRAME, 4)
    full = np.arange(2 * 300 * 300).reshape(2, 300, 300)
    for t in tiles:
        part = scatter_object(full, t)
        assert part.shape == (2, *t.box.shape)
        assert np.array_equal(part, full[:, t.box.r0:t.box.r1, t.box.c0:t.box.c1])
        part[...] = -1
        assert full.min() >= 0  # a copy, not a view


def test_box_helpers() -> None:
    a, b = Box(0, 0, 10, 10), Box(5, 8, 20, 20)
    assert a.intersect(b) == Box(5, 8, 10, 10)
    assert a.intersect(Box(10, 0, 12, 5)) is None
