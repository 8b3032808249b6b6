"""Run to run, the same settings give the same bits (docs/REPRODUCIBILITY.md).

Worker threads take chunks in a fixed assignment and their partial sums are combined in a
fixed order, so two runs with the same thread count agree bit for bit, also on the threaded
and fused CPU paths.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi import Reconstruction
from ptychompi.data.scan import ArrayScan
from ptychompi.sim.simulate import simulate


@pytest.fixture(scope="module")
def scan(as_array_scan) -> ArrayScan:
    return as_array_scan(simulate(frame=32, grid=8, step_px=5, probe_diameter_px=10,
                                  photons=1e5, seed=4))


def run(scan: ArrayScan, name: str, fft: str) -> tuple[np.ndarray, np.ndarray, list[float]]:
    cfg = {"algorithm": {"name": name, "iterations": 4, "probe_update_start": 1,
                         "probe_diameter_m": 10 * scan.geometry.wavelength_m
                         * scan.geometry.distance_m / (32 * scan.geometry.detector_pixel_m)},
           "parallel": {"device": "cpu", "workers": 2, "fft": fft}}
    with Reconstruction(cfg, scan=scan) as r:
        assert r.backend.threads == 2
        r.run()
        return r.object, r.probe, list(r.metrics["error"])


@pytest.mark.parametrize("fft", ["fftw", "scipy"])  # fused path (FFTW) and chunked path
@pytest.mark.parametrize("name", ["epie", "dm", "lsqml"])
def test_two_runs_on_two_threads_are_bit_identical(scan: ArrayScan, name: str,
                                                   fft: str) -> None:
    first, second = run(scan, name, fft), run(scan, name, fft)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2] == second[2]
