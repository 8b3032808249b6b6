"""Position refinement does no harm where the positions are right (issue 18).

On a scan the refinement was not tuned on (a focused beam, whose wide, curved probe couples
positions with the object's phase), refinement switched on from the TRUE positions must end
close to the run without it. Before the ``settle`` gate and the per-position adaptive step, the
positions drifted 0.5-0.75 px while object and probe still formed, and the object ended 7x
worse.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi.engines.positions import GAINS_EACH, adapted_gain, settled
from ptychompi.sim.matrix import Case, make_scan
from ptychompi.sim.position_runs import run_from

FOCUSED = Case(probe="focused", grid=12, frame=64, diameter_px=20.0)
ITERATIONS = 100
HARM = 1.3  # refined from true positions / not refined (the 1.3x)
DRIFT_PX = 0.1  # RMS distance the refined true positions may wander


def test_settled_opens_once_the_fall_slows() -> None:
    fast = [0.5 * 0.9 ** k for k in range(12)]  # 10 % per iteration: still forming
    assert not settled(fast, 0.02)
    slow = fast + [fast[-1] * 0.99 ** k for k in range(1, 7)]  # 1 % per iteration
    assert settled(slow, 0.02)
    assert not settled(slow[:5], 0.02)  # too few iterations to judge
    assert settled([], None)  # the gate off
    assert not settled([float("nan")] * 8, 0.02)
    # once open it stays open, whatever the error does next
    assert settled(slow + [x * 0.5 ** k for k, x in enumerate(fast)], 0.02)


def test_adapted_gain_halves_on_a_reversal_and_grows_on_a_steady_move() -> None:
    floor = GAINS_EACH[2]
    gain = np.array([[1.0, 0.5], [0.2, floor]])
    move = np.array([[1.0, -1.0], [0.3, -0.2]])
    previous = np.array([[-2.0, -1.0], [0.1, 0.4]])
    out = adapted_gain(gain, move, previous, (1.2, 0.5, floor))
    assert out[0, 0] == pytest.approx(0.5)  # reversed
    assert out[0, 1] == pytest.approx(0.6)  # kept its direction
    assert out[1, 0] == pytest.approx(0.24)
    assert out[1, 1] == pytest.approx(floor)  # reversed at the floor
    assert adapted_gain(gain, move, previous, (1.5, 0.7, 0.3))[0, 0] == pytest.approx(0.7)
    assert adapted_gain(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2)))[0, 0] == 1.0
    still = adapted_gain(gain, np.zeros((2, 2)), previous)  # no move: unchanged
    np.testing.assert_array_equal(still, gain)


def reconstruct(sim, correction: dict) -> tuple[float, float]:
    run = run_from(sim, sim.positions_px, "lsqml", ITERATIONS, correction)
    return run.object_error, run.position_rms_px


def test_refinement_from_true_positions_keeps_a_focused_beam_scan() -> None:
    sim = make_scan(FOCUSED)
    plain, _ = reconstruct(sim, {})
    refined, drift = reconstruct(sim, {"enabled": True})
    print(f"\n[position safety] focused, true positions: object {plain:.4f} -> refined "
          f"{refined:.4f} ({refined / plain:.2f}x), positions wandered {drift:.3f} px")
    assert drift < DRIFT_PX
    assert refined < HARM * plain
