"""ePIE's object momentum (mPIE, Maiden, Johnson & Li 2017): the velocity rule, its switch and
a resumed run that carries the velocity in its checkpoint."""

from __future__ import annotations

import numpy as np
from test_engines import as_scan, assert_resume_is_bit_identical, config

from ptychompi import Reconstruction
from ptychompi.engines.momentum import ObjectMomentum
from ptychompi.sim.simulate import simulate


def test_velocity_is_friction_times_the_last_plus_the_pass():
    rng = np.random.default_rng(0)
    obj = rng.normal(size=(5, 6)) + 1j * rng.normal(size=(5, 6))
    d1, d2 = (rng.normal(size=obj.shape) + 0j for _ in range(2))
    m = ObjectMomentum(friction=0.5, gain=0.3)
    m.mark(obj)
    start = obj.copy()
    obj += d1
    m.push(obj)
    np.testing.assert_allclose(obj, start + d1 + 0.3 * d1)
    after_first = obj.copy()
    m.mark(obj)  # a later mark keeps the push's object as the start of the next pass
    obj += d2
    m.push(obj)
    np.testing.assert_allclose(obj, after_first + d2 + 0.3 * (0.5 * d1 + d2))
    assert set(m.state()) == {"momentum_last", "momentum_velocity"}
    off = ObjectMomentum(friction=0.7, gain=0.0)
    off.mark(obj)
    before = obj.copy()
    obj += d1
    off.push(obj)
    np.testing.assert_array_equal(obj, before + d1)
    assert off.state() == {}


def test_gain_zero_is_epie_without_momentum():
    sim = simulate(frame=64, grid=6, step_px=8, probe_diameter_px=20, photons=1e6, seed=1)
    results = []
    for gain in (0.3, 0.0, 0.0):
        with Reconstruction(config("epie", 4, sim, epie={"momentum_gain": gain}),
                            scan=as_scan(sim)) as r:
            r.run()
            results.append(r.object)
    assert not np.allclose(results[0], results[1])
    np.testing.assert_array_equal(results[1], results[2])


def test_resumed_run_keeps_the_velocity(tmp_path):
    sim = simulate(frame=64, grid=6, step_px=8, probe_diameter_px=20, photons=1e6, seed=2)
    cfg = {**config("epie", 8, sim), "output": {"directory": str(tmp_path)}}

    def moving(first: Reconstruction) -> None:
        assert first.engine.momentum.velocity is not None

    assert_resume_is_bit_identical(cfg, sim, tmp_path, 5, on_first=moving)
