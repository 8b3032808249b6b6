"""The search for stuck positions (issue 18, :mod:`ptychompi.engines.position_search`): a
position moved by whole pixels on a formed object comes back exactly (both operation kinds)
and nothing moves from the true positions; on the 12 x 12 scan with 2 px random errors whose
largest errors the gradient leaves stuck or sends off, LSQML and ePIE bring every position
back with the search and not without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from resume_check import assert_resumed_equals_whole

import ptychompi.app.api as api
from ptychompi.app.api import Reconstruction
from ptychompi.backends import Backend, select_backend
from ptychompi.engines.position_search import offsets, search, search_due
from ptychompi.sim.matrix import Case, make_scan
from ptychompi.sim.position_errors import perturb, with_positions
from ptychompi.sim.position_runs import run_from

SCAN = Case(grid=12, frame=64, diameter_px=20, object="photo")
SMALL = Case(grid=8, frame=64, diameter_px=20, object="photo")
ITERATIONS = 200
# one error of this draw is 4.4 px along an axis (common shift removed): max_total (4 px by
# default) would hold it
SEARCH = {"enabled": True, "search_every": 10, "max_total": 6}


@pytest.fixture(scope="module")
def scan():
    return make_scan(SCAN)


def worst_px(found: np.ndarray, true: np.ndarray) -> float:
    """The largest distance from the truth, the positions' common shift removed."""
    d = found - true
    d -= d.mean(axis=0)
    return float(np.hypot(d[:, 0], d[:, 1]).max())


def test_offsets_and_schedule() -> None:
    moves = offsets(2)
    assert len(moves) == 25 and moves[0].tolist() == [0, 0]
    assert np.all(np.diff((moves * moves).sum(axis=1)) >= 0)  # nearest first
    due = [it for it in range(60) if search_due(SimpleCfg(None, 10), it)]
    assert due == [1, 13, 21, 33, 41, 53]  # one update (every 4th) in every 10 iterations
    every = [it for it in range(30) if search_due(SimpleCfg(1, 10), it)]
    assert every == [1, 11, 21]
    assert not any(search_due(SimpleCfg(1, None), it) for it in range(30))


class SimpleCfg:
    def __init__(self, update_every: int | None, search_every: int | None) -> None:
        self.update_every, self.search_every, self.start = update_every, search_every, 1


@pytest.mark.parametrize("ops", ["compiled", "array"])
def test_a_moved_position_comes_back_exactly(ops: str, monkeypatch) -> None:
    """On an object formed from the true positions, an inner position moved by (3, -2) px
    is the only candidate and returns to where it was; from the true positions nothing
    moves."""
    sim = make_scan(SMALL)
    backend = (select_backend("cpu", workers=1) if ops == "compiled"
               else Backend(np, "cpu", None, 1, ops_kind="array"))
    monkeypatch.setattr(api, "select_backend", lambda *a, **k: backend)
    cfg = {"algorithm": {"name": "lsqml", "iterations": 30, "position_correction": {
        "enabled": True, "start": 999, "search_every": 10}}}
    with Reconstruction(cfg, scan=sim.as_scan()) as recon:
        recon.run()
        engine = recon.engine
        refiner = engine.refiner
        true = engine.data.positions.copy()
        assert search(refiner, engine) is None  # no position stands out
        j = 27  # row 3, column 3: inside the scan
        moved = true.copy()
        moved[j] += (3.0, -2.0)
        engine.move_positions(moved)
        refiner.gain[j] = 0.25
        found = search(refiner, engine)
        assert found is not None
        np.testing.assert_array_equal(found, true)
        assert refiner.gain[j].tolist() == [1.0, 1.0]


def test_resumed_before_a_search_equals_the_whole_run(tmp_path: Path) -> None:
    """The search keeps no state of its own (its schedule is the iteration's): a run resumed
    from a checkpoint written just before the first search equals the uninterrupted run bit
    for bit, and in it the displaced positions came back to within a pixel and a half."""
    sim = make_scan(SMALL)
    planted = {18: (3, -2), 21: (-2, 3), 42: (2, 2), 45: (-3, -1)}
    given = sim.positions_px.copy()
    for g, d in planted.items():
        given[g] += d
    scan = with_positions(sim.as_scan(), given, sim.pixel_size_m)
    cfg = {"algorithm": {"name": "lsqml", "iterations": 11, "seed": 0, "position_correction": {
        "enabled": True, "start": 8, "settle": None, "search_every": 10}},
           "parallel": {"device": "cpu"}, "output": {"directory": str(tmp_path)}}
    # the search runs after iteration 8's update
    refined = assert_resumed_equals_whole(cfg, scan, tmp_path, 8)
    d = refined - sim.positions_px
    d -= np.median(d, axis=0)
    assert max(np.hypot(*d[g]) for g in planted) < 1.5


@pytest.mark.parametrize("engine", ["lsqml", "epie"])
def test_stuck_positions_come_back(scan, engine: str) -> None:
    true = scan.positions_px
    given = perturb(true, "random", np.random.default_rng(7), rms_px=2.0)
    plain = run_from(scan, given, engine, ITERATIONS, {**SEARCH, "search_every": None})
    found = run_from(scan, given, engine, ITERATIONS, SEARCH)
    print(f"\n[search] {engine}: worst {worst_px(plain.positions, true):.2f} -> "
          f"{worst_px(found.positions, true):.2f} px, RMS {plain.position_rms_px:.3f} -> "
          f"{found.position_rms_px:.3f} px, object error {plain.object_error:.4f} -> "
          f"{found.object_error:.4f}")
    assert worst_px(plain.positions, true) > 2.0  # without it, some stay far off
    assert worst_px(found.positions, true) < 0.3
    assert found.object_error < 0.9 * plain.object_error
