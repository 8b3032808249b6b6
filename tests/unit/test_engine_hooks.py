"""The engine hooks that let the runner and checkpoints stay engine-agnostic: state_nbytes,
position_state / adopt_positions / rebuild_state (DM's exit waves, freed at the hand-over to
its LSQML refinement)."""

from __future__ import annotations

import numpy as np
import pytest
from test_engines import as_scan, config

from ptychompi import Reconstruction
from ptychompi.sim.simulate import simulate

SCALARS = ("iteration", "errors", "rng")


@pytest.fixture(scope="module")
def sim():
    return simulate(frame=64, grid=8, step_px=8, probe_diameter_px=20, photons=1e5, seed=3)


def state_bytes(engine) -> int:
    return sum(v.nbytes for k, v in engine.state().items() if k not in SCALARS)


@pytest.mark.parametrize("name", ["epie", "dm", "lsqml"])
def test_state_nbytes_is_the_checkpoint_state(sim, name):
    with Reconstruction(config(name, 2, sim), scan=as_scan(sim)) as r:
        r.run()
        e = r.engine
        assert e.state_nbytes() == state_bytes(e)
        plain = e.object.nbytes + e.probe.nbytes
        if name == "dm":  # every position's exit waves: n x modes x M x M complex64
            assert e.state_nbytes() == plain + len(sim.frames) * 64 * 64 * 8 + 1  # +flag
        elif name == "epie":  # mPIE's momentum: the object after the last pass, the velocity
            assert e.state_nbytes() == plain + 2 * e.object.nbytes
        else:
            assert e.state_nbytes() == plain


def test_dm_position_state_adopt_and_rebuild(sim):
    with Reconstruction(config("dm", 2, sim, dm={"refine_from": 3}), scan=as_scan(sim)) as r:
        r.run()
        e = r.engine
        waves = e.position_state()["waves"]
        assert waves is e.waves and waves.shape[0] == len(sim.frames)
        kept = waves.copy()
        e.adopt_positions(np.array([0, 5]), {"waves": np.zeros((2, *waves.shape[1:]),
                                                                 waves.dtype)})
        assert not e.waves[[0, 5]].any() and np.array_equal(e.waves[1:5], kept[1:5])
        e.rebuild_state()  # the waves of the current object and probe, as a fresh start
        with Reconstruction(config("dm", 0, sim), scan=as_scan(sim)) as fresh:
            fresh.engine.start_from(e.object, e.probe, e.iteration, e.errors)
            assert np.array_equal(e.waves, fresh.engine.waves)
        r.step(2)  # the hand-over to LSQML frees the waves: nothing per position is kept
        assert e.waves is None and e.position_state() == {}
        assert e.state_nbytes() == state_bytes(e) < e.object.nbytes + e.probe.nbytes + 8


@pytest.mark.parametrize("name", ["epie", "lsqml"])
def test_engines_without_per_position_state(sim, name):
    with Reconstruction(config(name, 1, sim), scan=as_scan(sim)) as r:
        assert r.engine.position_state() == {}
