"""Position refinement on a generator scan it was not tuned on (issue 18).

The refinement's rules were tuned on test_positions' 8×8 texture scan (70 % overlap, 1e7
photons). Here the robustness generator's own settings: a photograph with sharp edges, a
Fresnel-fringed pinhole beam, 62 % overlap, 1e6 photons, a jittered 12×12 raster, and 1 px
RMS random errors. With ``affine`` the scan-wide linear part of the moves steps as one
(:meth:`PositionRefiner._split_linear`): the per-position gains alone cut it with the noise,
and it converged slowly.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi.config import PositionCorrectionConfig
from ptychompi.engines.positions import PositionRefiner, make_refiner
from ptychompi.parallel.serial_exchange import SerialExchange
from ptychompi.sim.matrix import Case, make_scan
from ptychompi.sim.position_errors import perturb, rms_error
from ptychompi.sim.position_runs import run_from

PHOTO = Case(object="photo", grid=12, frame=64, diameter_px=20.0)
ITERATIONS = 200
POSITION_DROP = 3.0  # the bars: RMS position error falls at least 3x,
OBJECT_RATIO = 1.3  # and the object error within 1.3x that of the true positions


@pytest.fixture(scope="module")
def photo():
    return make_scan(PHOTO)


def reconstruct(sim, positions: np.ndarray, engine: str, correction: dict) -> tuple[float, float]:
    run = run_from(sim, positions, engine, ITERATIONS, correction)
    return run.object_error, run.position_rms_px


@pytest.mark.parametrize("engine", ["lsqml", "epie"])
def test_refinement_recovers_random_errors_on_an_untuned_scan(photo, engine: str) -> None:
    given = perturb(photo.positions_px, "random", np.random.default_rng(7), rms_px=1.0)
    best, _ = reconstruct(photo, photo.positions_px, engine, {})
    refined, rms = reconstruct(photo, given, engine, {"enabled": True, "affine": True})
    start = rms_error(given, photo.positions_px)
    print(f"\n[untuned positions] {engine}: position RMS {start:.3f} -> {rms:.3f} px; object "
          f"error true {best:.4f}, refined {refined:.4f} ({refined / best:.2f}x)")
    assert rms <= start / POSITION_DROP
    assert refined <= OBJECT_RATIO * best


def test_linear_part_of_the_moves_is_split_off() -> None:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0), indexing="ij"), -1)
    positions = grid.reshape(-1, 2) * 7 + 3
    refiner = make_refiner(PositionCorrectionConfig(enabled=True, affine=True), positions,
                           (5, 9), (120, 120), 16)
    assert isinstance(refiner, PositionRefiner)
    linear = np.array([[0.02, -0.01], [0.015, -0.03]])
    centred = positions - positions.mean(axis=0)
    own = rng.normal(0.0, 0.1, positions.shape)
    own -= centred @ np.linalg.lstsq(centred, own, rcond=None)[0]  # no linear part of its own
    ex = SerialExchange(None, None)
    rest, fitted = refiner._split_linear(centred @ linear + own, ex)
    np.testing.assert_allclose(fitted, linear, atol=1e-12)
    np.testing.assert_allclose(rest, own, atol=1e-12)
