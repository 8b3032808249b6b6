"""``run --follow`` starts from the probe a run over the same frames would: the beam diameter
and the side of the focus read from the rows that are in (:mod:`ptychompi.model.defocus`)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ptychompi import Reconstruction
from ptychompi.app.follow import build_follow
from ptychompi.config import config_from_dict
from ptychompi.sim.matrix import DETECTOR_PIXEL_M, DISTANCE_M, ENERGY_KEV, Case, make_scan

GRID, FRAME = 12, 64


def _config(tmp: Path, follow: bool) -> dict:
    data = {"path": str(tmp / "rows" / "scan_%03d.h5"), "position_file": str(tmp / "pos.csv"),
            "scan_dims": [GRID, GRID]}
    if follow:
        data["follow"] = {"poll_s": 0.1, "timeout_s": 5}
    return {"data": data,
            "geometry": {"energy_kev": ENERGY_KEV, "distance_m": DISTANCE_M,
                         "detector_pixel_m": DETECTOR_PIXEL_M},
            "algorithm": {"name": "lsqml", "iterations": 2},
            "parallel": {"device": "cpu", "workers": 1},
            "output": {"directory": str(tmp / "out"), "live_every": 0}}


def test_follow_starts_on_the_side_of_the_focus_the_data_show(tmp_path):
    """A Gaussian beam on the negative side of the focus, every row written: the followed
    run's starting probe is the offline run's (before, following always took the positive
    side)."""
    scan = make_scan(Case(probe="gaussian").scaled(GRID, FRAME))
    rows = tmp_path / "rows"
    rows.mkdir()
    for i in range(GRID):
        with h5py.File(rows / f"scan_{i + 1:03d}.h5", "w") as f:
            f.create_dataset("/entry/data/data", data=scan.frames[i * GRID:(i + 1) * GRID])
    np.savetxt(tmp_path / "pos.csv", scan.positions_px * scan.pixel_size_m, delimiter=",")
    with Reconstruction(config_from_dict(_config(tmp_path, False))) as offline:
        start = np.asarray(offline.engine.probe)
    with build_follow(config_from_dict(_config(tmp_path, True)), None) as followed:
        assert followed.frames_in == GRID * GRID
        got = np.asarray(followed.engine.probe)
    overlap = abs(np.vdot(start, got)) / (np.linalg.norm(start) * np.linalg.norm(got))
    assert overlap > 0.999, overlap
    flipped = np.conj(start[..., ::-1, ::-1])  # the other side of the focus
    assert abs(np.vdot(flipped, got)) / (np.linalg.norm(flipped) * np.linalg.norm(got)) < 0.99
