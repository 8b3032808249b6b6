"""The position refinement's misfit guard (issue 18): refinement that makes the data fit worse
stops and hands back the positions of the best fit.

Real near-field data (PETRA III P25, a Siemens star; its positions were not made by us): LSQML's
refinement there moved the positions about 0.8 px and left the error about twice that of the
run without refinement. The guard stops it within a few iterations."""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi.app.api import Reconstruction
from ptychompi.engines.position_guard import MisfitGuard

P25 = "petra3-p25-nearfield/PETRAIII_P25_Near_Field_Ptycho.cxi"
ITERATIONS = 60
WORSE = 1.15  # refined (guarded) / unrefined final error on the real scan


def positions(k: int) -> np.ndarray:
    return np.full((3, 2), float(k))


def test_a_falling_error_never_halts() -> None:
    guard = MisfitGuard(0.1, 3)
    errors: list[float] = []
    for k in range(30):
        assert guard.observe(errors, positions(k)) is None
        if k == 2:
            guard.moved(k)
        errors.append(1.0 / (k + 1) + 0.05 * (k % 2))  # falling, with a wobble
    assert not guard.halted


def test_a_rise_halts_and_returns_the_best_positions() -> None:
    guard = MisfitGuard(0.1, 3)
    errors: list[float] = []
    trace = [1.0, 0.5, 0.4, 0.45, 0.46, 0.5, 0.6, 0.6]  # best 0.4, run with positions(2)
    back = None
    for k, e in enumerate(trace):
        back = guard.observe(errors, positions(k))
        if back is not None:
            break
        guard.moved(k)
        errors.append(e)
    assert back is not None and guard.halted
    np.testing.assert_array_equal(back, positions(2))
    assert len(errors) == 6  # 0.45, 0.46, 0.5 all above 0.44, the window after the move
    again = MisfitGuard(0.1, 3)
    again.restore(guard.state())
    assert again.halted and again.best_error == pytest.approx(0.4)
    np.testing.assert_array_equal(again.best_positions, positions(2))
    assert MisfitGuard().observe([], positions(0)) is None


def run(shared_data, correction: dict) -> tuple[float, np.ndarray, np.ndarray | None, bool]:
    cfg = {"data": {"path": str(shared_data / P25)},
           "geometry": {"propagation": "nearfield", "focus_to_sample_m": 3.65e-3},
           "algorithm": {"name": "lsqml", "iterations": ITERATIONS, "probe_update_start": 1,
                         "position_correction": correction},
           "parallel": {"device": "cpu"}}
    with Reconstruction(cfg) as recon:
        recon.run()
        refiner = recon.engine.refiner
        return (recon.metrics["error"][-1], np.asarray(recon.positions),
                recon.refined_positions(), refiner is not None and refiner.halted)


@pytest.mark.slow
def test_the_guard_keeps_refinement_from_spoiling_real_near_field_data(shared_data) -> None:
    plain, given, _, _ = run(shared_data, {})
    guarded, _, refined, halted = run(shared_data, {"enabled": True})
    unguarded, _, drifted, _ = run(shared_data, {"enabled": True, "guard": None})
    moved = float(np.sqrt(((drifted - given) ** 2).sum(axis=1).mean()))
    print(f"\n[position guard] near-field LSQML {ITERATIONS} it: error {plain:.4f} unrefined, "
          f"{unguarded:.4f} refined without the guard (positions moved {moved:.2f} px RMS), "
          f"{guarded:.4f} with it (halted: {halted})")
    assert unguarded > WORSE * plain  # what the guard is for: the drift spoils this scan
    assert halted
    np.testing.assert_allclose(refined, given, atol=1e-9)  # the best fit had the inputs
    assert guarded <= WORSE * plain
