"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``shared/data`` folder beside the repository (X/clone and X/shared in CI).

    Where it cannot be (the offline GPU check carries no data), ``PTYCHOMPI_SKIP_SHARED_DATA=1``
    skips the tests that need it; otherwise a missing folder fails them.
    """
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir() and os.environ.get("PTYCHOMPI_SKIP_SHARED_DATA") == "1":
        pytest.skip(f"no shared data at {path} (PTYCHOMPI_SKIP_SHARED_DATA=1)")
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated CXI scan (64² frames, 8 x 8 raster), once per test module; a module
    that defines its own ``scan`` fixture uses that instead."""
    from ptychompi.sim.simulate import simulate_to_files  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("scan")
    simulate_to_files(str(folder / "scan.cxi"), frame=64, grid=8, step_px=8,
                      probe_diameter_px=20, photons=1e6, seed=0)
    return folder / "scan.cxi"


@pytest.fixture(scope="session")
def as_array_scan():
    """``as_array_scan(sim)``: a :class:`ptychompi.sim.simulate.Simulation` as an in-memory scan."""
    from ptychompi.data.scan import ArrayScan, ScanGeometry  # noqa: PLC0415

    def convert(sim) -> ArrayScan:
        return ArrayScan(path="sim", n_frames=len(sim.frames), frame_shape=sim.frames.shape[1:],
                         dtype=np.float32, positions_m=sim.positions_m, frames=sim.frames,
                         geometry=ScanGeometry(sim.wavelength_m, sim.distance_m,
                                               sim.detector_pixel_m))

    return convert
