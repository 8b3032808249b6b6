"""A resume on another rank count carries the engines' state (ptychompi/app/resume_state.py).

On one process the path for another rank count is forced by hiding each rank's own state
(``checkpoint._matching_state``); it must then end bit for bit where the same count's own path
does. The MPI side (1 -> N, N -> N-1, ...) is tests/mpi/test_resume_mpi.py.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychompi import Reconstruction
from ptychompi.app import checkpoint
from ptychompi.app.checkpoint import resume, state_path, write_checkpoint
from ptychompi.app.resume_state import BOOK_KEYS, GLOBAL_KEYS, LOCAL_KEYS, POSITION_KEYS, TILE_KEYS
from ptychompi.sim.matrix import Case, make_scan
from ptychompi.sim.position_errors import perturb, with_positions

ITERATIONS = 8
AT = 4
SIM = make_scan(Case(grid=6, frame=64, diameter_px=24, overlap=0.7, photons=1e7, seed=1))
GIVEN = perturb(SIM.positions_px, "both", np.random.default_rng(2), rms_px=1.5)


def config(engine: str) -> dict:
    """Position refinement with the affine fit, the probe re-centred, moves from iteration 1
    on (settle off: the moves' state counts by the checkpoint) (DM: without refinement,
    handing over to LSQML after the checkpoint, so its exit waves and best state count)."""
    name = engine.split("-")[0]
    algorithm = {"name": name, "iterations": ITERATIONS, "seed": 0,
                 "position_correction": {"enabled": name != "dm", "start": 1, "affine": True,
                                         "update_every": 1, "settle": None}}
    if name == "dm":
        algorithm["dm"] = {"refine_from": 6, "refine_patience": None,
                           "refine_noise_ratio": None, "refine_earliest": 1}
    return {"algorithm": algorithm, "parallel": {"device": "cpu"}}


def scan() -> object:
    return with_positions(SIM.as_scan(), GIVEN, SIM.pixel_size_m)


def checkpointed(engine: str, folder: Path) -> dict:
    """The first AT iterations, checkpointed in ``folder``; returns the engine's state."""
    with Reconstruction(config(engine), scan=scan()) as first:
        first.step(AT)
        write_checkpoint(first, folder)
        return first.engine.state()


def resumed(engine: str, folder: Path) -> tuple[np.ndarray, ...]:
    with Reconstruction(config(engine), scan=scan()) as again:
        assert resume(again, folder) == AT
        again.run()
        positions = again.refined_positions()
        return again.object, again.probe, *(() if positions is None else (positions,))


@pytest.mark.parametrize("engine", ["lsqml", "epie", "dm"])
def test_every_state_key_has_a_layout(engine: str, tmp_path: Path) -> None:
    """Each key of an engine's checkpoint state is one that a resume on another rank count
    knows how to carry (a new key must be placed in resume_state's lists)."""
    state = checkpointed(engine, tmp_path)
    with h5py.File(state_path(tmp_path, 0, 1), "r") as f:
        written = set(f)
    known = TILE_KEYS | POSITION_KEYS | LOCAL_KEYS | GLOBAL_KEYS | BOOK_KEYS
    assert written <= known, written - known
    expected = {"lsqml": {"position_velocity", "probe_reference", "position_transform"},
                "epie": {"momentum_velocity", "momentum_last", "position_velocity"},
                "dm": {"waves", "best_object", "best_probe"}}[engine]
    assert expected <= set(state), set(state)


@pytest.mark.parametrize("engine", ["lsqml", "epie", "dm"])
def test_other_count_path_is_bit_for_bit(engine: str, tmp_path: Path, monkeypatch) -> None:
    """Taken on the same count, the path for another rank count ends where the rank's own
    state does (object, probe, refined positions), bit for bit: the position moves'
    momentum, the affine fit, the probe's reference centroid, the random generator, ePIE's
    object momentum and DM's exit waves and best state are carried (before, they were
    rebuilt and the run went elsewhere)."""
    checkpointed(engine, tmp_path)
    own = resumed(engine, tmp_path)
    monkeypatch.setattr(checkpoint, "_matching_state", lambda *args: None)
    other = resumed(engine, tmp_path)
    for a, b in zip(own, other, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("damage", ["no box", "truncated"])
def test_unusable_old_state_falls_back_to_the_rebuilt_state(damage: str, tmp_path: Path,
                                                            monkeypatch) -> None:
    """A state file without the tile's box (an older checkpoint) or damaged: the resume on
    another rank count goes on from the global object and probe, as before (the moves'
    momentum starts again from zero)."""
    checkpointed("lsqml", tmp_path)
    path = state_path(tmp_path, 0, 1)
    if damage == "no box":
        with h5py.File(path, "r+") as f:
            del f["box"]
    else:
        path.write_bytes(path.read_bytes()[:2000])
    monkeypatch.setattr(checkpoint, "_matching_state", lambda *args: None)
    with Reconstruction(config("lsqml"), scan=scan()) as again:
        assert resume(again, tmp_path) == AT
        assert not np.any(again.engine.refiner.velocity)
        again.step(1)
        assert np.isfinite(again.engine.errors[-1])
