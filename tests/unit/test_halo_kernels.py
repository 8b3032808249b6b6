"""The touched halo's compiled loops: row runs cover exactly the painted windows, in the
mask's row-major order, and gather / add visit the pixels in that order."""

from __future__ import annotations

import numpy as np

from ptychompi.parallel import halo_kernels as hk
from ptychompi.parallel.sparse_halo import cover
from ptychompi.parallel.tiling import Box


def test_row_runs_match_the_painted_mask_and_its_order() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        r0, c0 = (int(v) for v in rng.integers(0, 20, 2))
        box = Box(r0, c0, r0 + int(rng.integers(1, 60)), c0 + int(rng.integers(1, 60)))
        tops = rng.integers(-30, 80, (int(rng.integers(0, 20)), 2)).astype(np.int64)
        fh, fw = (int(v) for v in rng.integers(1, 30, 2))
        mask = cover(tops, box, (fh, fw))
        runs = hk.row_runs(tops, box.r0, box.c0, *box.shape, fh, fw)
        painted = np.zeros_like(mask)
        for y, a, b in runs:
            assert a < b and not painted[y, a:b].any()  # disjoint, non-empty
            painted[y, a:b] = True
        np.testing.assert_array_equal(painted, mask)
        src = rng.standard_normal((box.shape[0] + 5, box.shape[1] + 7)).astype(np.float32)
        by_mask = src[2:2 + box.shape[0], 3:3 + box.shape[1]][mask]  # row-major
        by_runs = np.empty_like(by_mask)
        assert hk.gather_runs(src, 2, 3, runs, by_runs) == by_mask.size
        np.testing.assert_array_equal(by_runs, by_mask)
        dst = src.copy()
        hk.scatter_runs(dst, 2, 3, runs, by_runs)
        expected = src.copy()
        expected[2:2 + box.shape[0], 3:3 + box.shape[1]][mask] *= 2
        np.testing.assert_array_equal(dst, expected)
