"""The scan data model's checks, and reconstruction set-up errors on bad scans."""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi import Reconstruction
from ptychompi.data.scan import ArrayScan, ScanGeometry
from ptychompi.errors import DataError, PtychompiError


def scan(n: int = 4, positions: np.ndarray | None = None, frames=None) -> ArrayScan:
    frames = np.ones((n, 16, 16), np.float32) if frames is None else frames
    pos = np.zeros((n, 2)) if positions is None else positions
    return ArrayScan(path="mem", n_frames=len(frames), frame_shape=(16, 16), dtype=np.float32,
                     positions_m=pos, frames=frames, geometry=ScanGeometry(1e-10, 1.0, 1e-4))


@pytest.mark.parametrize("bad,needle", [
    (scan(0, np.zeros((0, 2)), np.zeros((0, 16, 16), np.float32)), "no frames"),
    (scan(4, np.zeros((3, 2))), "4 frames but 3 positions"),
    (scan(4, np.full((4, 2), np.nan)), "NaN"),
    (scan(4, np.zeros((4, 3))), "expected (N, 2)"),
])
def test_validate_names_the_problem(bad, needle):
    with pytest.raises(DataError) as info:
        bad.validate()
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_subset_reads_in_any_order():
    frames = np.arange(5 * 16 * 16, dtype=np.float32).reshape(5, 16, 16)
    s = scan(5, np.zeros((5, 2)), frames)
    assert np.array_equal(s.read([3, 1, 3]), frames[[3, 1, 3]])
    with pytest.raises(DataError, match="out of range"):
        s.read([5])


def test_reconstruction_refuses_nan_frames_before_compute():
    frames = np.ones((4, 16, 16), np.float32)
    frames[2, 3, 3] = np.nan
    pos = np.array([[0, 0], [0, 1e-7], [1e-7, 0], [1e-7, 1e-7]])
    with pytest.raises(PtychompiError, match="frame 2"):
        Reconstruction({"parallel": {"device": "cpu"}}, scan=scan(4, pos, frames))
