"""Engines against ground truth (simulation) and real data (PETRA III near field)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ptychompi import Reconstruction
from ptychompi.app.checkpoint import resume, write_checkpoint
from ptychompi.data.scan import ArrayScan, ScanGeometry
from ptychompi.errors import ConfigError, PtychompiError
from ptychompi.model.metrics import object_error
from ptychompi.model.physics import Propagator, Windows, fourier_error_terms, subpixel_ramps
from ptychompi.sim.simulate import simulate

P25 = "petra3-p25-nearfield/PETRAIII_P25_Near_Field_Ptycho.cxi"


def as_scan(sim) -> ArrayScan:
    return ArrayScan(path="sim", n_frames=len(sim.frames), frame_shape=sim.frames.shape[1:],
                     dtype=np.float32, positions_m=sim.positions_m, frames=sim.frames,
                     geometry=ScanGeometry(sim.wavelength_m, sim.distance_m,
                                           sim.detector_pixel_m))


def config(name: str, iterations: int, sim, **algo) -> dict:
    diameter = 40 * sim.pixel_size_m * sim.frames.shape[-1] / 128
    return {"algorithm": {"name": name, "iterations": iterations, "probe_diameter_m": diameter,
                          **algo}, "parallel": {"device": "cpu"}}


def assert_resume_is_bit_identical(cfg: dict, sim, folder: Path, at: int,
                                   on_whole: Callable[[Reconstruction], None] = lambda r: None,
                                   on_first: Callable[[Reconstruction], None] = lambda r: None,
                                   ) -> None:
    """A run checkpointed after ``at`` iterations and resumed ends with the uninterrupted
    run's object and probe, bit for bit (``on_whole``, ``on_first``: further checks of the
    uninterrupted run and of the first part)."""
    with Reconstruction(cfg, scan=as_scan(sim)) as whole:
        whole.run()
        on_whole(whole)
        expected = (whole.object, whole.probe)
    with Reconstruction(cfg, scan=as_scan(sim)) as first:
        first.step(at)
        on_first(first)
        write_checkpoint(first, folder)
    with Reconstruction(cfg, scan=as_scan(sim)) as again:
        assert resume(again, folder) == at
        again.run()
        np.testing.assert_array_equal(again.object, expected[0])
        np.testing.assert_array_equal(again.probe, expected[1])


@pytest.fixture(scope="module")
def sim20():
    """The issue's scan: 128² frames, 20x20 jittered raster, step 15 px, probe ~40 px."""
    return simulate(frame=128, grid=20, step_px=15, probe_diameter_px=40, photons=1e6, seed=0)


def truth_floor(sim) -> float:
    """Fourier error of the true object and probe: the Poisson noise floor of the data."""
    from ptychompi.backends import select_backend  # noqa: PLC0415
    pos = sim.positions_px
    top = np.floor(pos).astype(int)
    frame = sim.frames.shape[-1]
    with select_backend("cpu") as be:
        ramps = subpixel_ramps(be, pos - top, frame)
        probes = be.ops.shifted_probes(be.fft2(sim.probe), ramps, sim.probe)
        win = Windows(top[:, 0], top[:, 1], None, frame)
        wave = be.fft2(probes * be.ops.extract(sim.object, win)[:, None])
        amp = np.fft.ifftshift(np.sqrt(sim.frames), axes=(-2, -1))
        return fourier_error_terms(be, wave, amp) / float(sim.frames.sum())


# (object error bar, final error / noise floor, first / final Fourier error) after 100
# iterations: the engines issue's bars (0.10, LSQML and DM 0.06; the Fourier error falls 20x),
# plus a final Fourier error within 1.5x of the data's Poisson floor (computed from the truth).
BARS = {"epie": (0.10, 1.5, 20.0), "dm": (0.06, 1.5, 20.0), "lsqml": (0.06, 1.5, 20.0)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["epie", "dm", "lsqml"])
def test_reconstruction_reaches_truth(sim20, name):
    r = Reconstruction(config(name, 100, sim20), scan=as_scan(sim20))
    r.run()
    err = object_error(r.object, r.positions, sim20.object, sim20.positions_px, sim20.probe)
    errors = r.metrics["error"]
    floor = truth_floor(sim20)
    bar, floor_factor, drop = BARS[name]
    assert err <= bar, f"{name}: object error {err:.4f} > {bar}"
    assert errors[0] / errors[-1] >= drop, f"{name}: error fell {errors[0] / errors[-1]:.1f}x"
    assert errors[-1] <= floor_factor * floor, f"{name}: {errors[-1]:.2e}, floor {floor:.2e}"


def test_two_probe_modes_fit_better():
    sim = simulate(frame=64, grid=10, step_px=8, probe_diameter_px=20, photons=1e6, seed=1,
                   probe_modes=2)
    final = {}
    for modes in (1, 2):
        r = Reconstruction(config("lsqml", 40, sim, probe_modes=modes), scan=as_scan(sim))
        r.run()
        final[modes] = r.metrics["error"][-1]
        assert r.probe.shape[0] == modes
    assert final[2] < 0.97 * final[1], final


@pytest.mark.slow
@pytest.mark.parametrize("name,bar", [("epie", 0.015), ("lsqml", 0.015), ("dm", 0.015)])
def test_petra_nearfield(shared_data, tmp_path, name, bar):
    """Real near-field data: the error falls below the bar and the phase shows the star."""
    cfg = {"data": {"path": str(shared_data / P25)},
           "geometry": {"propagation": "nearfield", "focus_to_sample_m": 3.65e-3},
           "algorithm": {"name": name, "iterations": 100, "probe_update_start": 1},
           "parallel": {"device": "cpu"}}
    with Reconstruction(cfg) as r:
        r.run()
        errors = r.metrics["error"]
        final = errors[-1]
        from ptychompi.io.export import export_arrays  # noqa: PLC0415

        export_arrays(r.object, r.probe, r.layout.pixel_size_m, "png", str(tmp_path), name)
    assert final <= bar, f"{name}: Fourier error {final:.4f} > {bar}"
    assert errors[0] > final


@pytest.mark.parametrize("name", ["epie", "dm", "lsqml"])
def test_step_mode_equals_whole_mode_and_state_restores(name):
    sim = simulate(frame=32, grid=6, step_px=5, probe_diameter_px=10, photons=1e5, seed=2)
    cfg = config(name, 6, sim, probe_update_start=1)
    whole = Reconstruction(cfg, scan=as_scan(sim))
    whole.run()
    stepped = Reconstruction(cfg, scan=as_scan(sim))
    for _ in range(3):
        stepped.step()
    saved = stepped.engine.state()
    stepped.step(3)
    assert np.array_equal(whole.object, stepped.object)
    assert np.array_equal(whole.probe, stepped.probe)
    assert whole.metrics["error"] == stepped.metrics["error"]
    resumed = Reconstruction(cfg, scan=as_scan(sim))
    resumed.engine.restore(saved)
    resumed.step(3)
    assert np.array_equal(whole.object, resumed.object)
    assert np.array_equal(whole.probe, resumed.probe)


def test_nearfield_propagator_is_unitary_and_inverts():
    from ptychompi.backends import select_backend  # noqa: PLC0415

    rng = np.random.default_rng(0)
    psi = rng.standard_normal((2, 1, 64, 64)) + 1j * rng.standard_normal((2, 1, 64, 64))
    with select_backend("cpu", double=True) as be:
        prop = Propagator.build(be, "nearfield", 64, 1e-10, 3.6e-3, 1.8e-7)
        out = prop.forward(psi)
        assert np.isclose(np.linalg.norm(out), np.linalg.norm(psi))
        assert np.allclose(prop.backward(out), psi)


@pytest.mark.parametrize("algo,message", [
    ({"name": "epie", "step_size": 1}, "step_size"),
    ({"probe_modes": 0}, "probe_modes"),
    ({"iterations": -1}, "iterations"),
    ({"batch_size": 10_000}, "batch_size"),
])
def test_bad_engine_options_fail_before_compute(algo, message):
    sim = simulate(frame=32, grid=4, step_px=6, probe_diameter_px=10, photons=1e5, seed=3)
    with pytest.raises((ConfigError, PtychompiError)) as info:
        Reconstruction({"algorithm": algo, "parallel": {"device": "cpu"}}, scan=as_scan(sim))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_probe_guess_of_wrong_shape(tmp_path):
    sim = simulate(frame=32, grid=4, step_px=6, probe_diameter_px=10, photons=1e5, seed=3)
    np.save(tmp_path / "p.npy", np.ones((16, 16), np.complex64))
    with pytest.raises(PtychompiError, match="probe_guess"):
        Reconstruction(config("dm", 2, sim, probe_guess=str(tmp_path / "p.npy")),
                       scan=as_scan(sim))


def test_nearfield_without_distance(tmp_path):
    sim = simulate(frame=32, grid=4, step_px=6, probe_diameter_px=10, photons=1e5, seed=3)
    scan = as_scan(sim)
    scan.geometry = ScanGeometry(sim.wavelength_m, None, sim.detector_pixel_m)
    with pytest.raises(PtychompiError, match="distance_m"):
        Reconstruction({"geometry": {"propagation": "nearfield"},
                        "parallel": {"device": "cpu"}}, scan=scan)


def test_probe_guess_from_file_is_used(tmp_path):
    sim = simulate(frame=32, grid=4, step_px=6, probe_diameter_px=10, photons=1e5, seed=3)
    np.save(tmp_path / "p.npy", sim.probe)
    r = Reconstruction(config("epie", 0, sim, probe_guess=str(tmp_path / "p.npy")),
                       scan=as_scan(sim))
    p = r.probe[0]
    c = np.vdot(p, sim.probe[0]) / np.vdot(p, p)
    assert np.allclose(c * p, sim.probe[0], atol=1e-3 * np.abs(sim.probe).max())
    assert Path(tmp_path / "p.npy").exists()


def test_subpixel_grid_rounds_fractions_and_keeps_corners():
    """Fractions round to 1/bins px (at most 1/(2 bins) away); corners stay floor(position),
    so windows never leave the tile; equal fractions share one table row."""
    from ptychompi.model.physics import subpixel_grid  # noqa: PLC0415

    pos = np.array([[3.0, 4.99], [3.02, 7.5], [10.51, 0.0], [2.0, 1.97]])
    top, table, ids = subpixel_grid(pos, 16)
    assert np.array_equal(top, np.floor(pos))
    assert np.abs(top + table[ids] - pos).max() <= 1 / 32
    assert ids[0] == ids[3]  # both (0, 1): within 1/32 px of a whole pixel on the right
    assert np.array_equal(table[ids[0]], [0.0, 1.0])
    assert len(table) == 3  # only the fractions in use: any bins costs O(positions)
    assert len(subpixel_grid(pos, 10**6)[1]) == len(pos)
    exact_top, fractions, exact_ids = subpixel_grid(pos, 0)
    assert np.array_equal(exact_top + fractions, pos) and len(set(exact_ids)) == len(pos)


def test_dm_shared_shifts_equal_per_position_shifts(monkeypatch):
    """DM's probe update visits positions sorted by shift (one double-precision back-shift
    per run of equal shifts, one shifted probe per shift) and follows DM that back-shifts
    every position on its own (same rounded positions), to float32 rounding."""
    from ptychompi.engines.dm import DifferenceMap  # noqa: PLC0415

    sim = simulate(frame=32, grid=8, step_px=5, probe_diameter_px=10, photons=1e5, seed=4)
    cfg = config("dm", 8, sim, probe_update_start=1, subpixel_bins=2)  # many shared shifts
    grouped = Reconstruction(cfg, scan=as_scan(sim))
    engine = grouped.engine
    order = engine._by_shift
    runs = [engine.runs(order[sl]) for sl in engine.chunks(len(engine.rows))]
    assert sum(len(r) for r in runs) < 0.5 * len(engine.rows)
    assert len(engine._probe_table()[0]) == len(np.unique(engine.ramp_id)) < len(engine.rows)
    grouped.run()
    monkeypatch.setattr(DifferenceMap, "runs", lambda self, sel: None)
    single = Reconstruction(cfg, scan=as_scan(sim))
    single.run()
    scale = np.abs(single.object).max()
    assert np.abs(grouped.object - single.object).max() <= 1e-4 * scale
    assert np.abs(grouped.probe - single.probe).max() <= 1e-4 * np.abs(single.probe).max()
    assert np.allclose(grouped.metrics["error"], single.metrics["error"], rtol=1e-4)


def test_lsqml_batches_hold_whole_groups_of_equal_shift(monkeypatch):
    """LSQML's sparse batches are cut from an order that keeps frames of equal (rounded)
    shift together, so a batch shifts its probe once per group; back-shifting per run of
    equal shifts (double precision) follows back-shifting every frame on its own."""
    from ptychompi.engines.lsqml import LSQML  # noqa: PLC0415

    sim = simulate(frame=32, grid=8, step_px=5, probe_diameter_px=10, photons=1e5, seed=4)
    cfg = config("lsqml", 6, sim, probe_update_start=1, subpixel_bins=2)
    engine = Reconstruction(cfg, scan=as_scan(sim)).engine  # only to look at its batches
    batches = engine._batches()
    pairs = sum(len(np.unique(engine.ramp_id[b])) for b in batches)
    groups = len(np.unique(engine.ramp_id))
    assert groups > 4 and len(batches) > 4
    assert pairs <= len(batches) + groups - 1  # each group is one stretch of the order
    assert sorted(np.concatenate(batches)) == list(range(len(engine.rows)))
    grouped = Reconstruction(cfg, scan=as_scan(sim))
    grouped.run()
    monkeypatch.setattr(LSQML, "runs", lambda self, sel: None)
    single = Reconstruction(cfg, scan=as_scan(sim))
    single.run()
    assert np.abs(grouped.object - single.object).max() <= 1e-4 * np.abs(single.object).max()
    assert np.abs(grouped.probe - single.probe).max() <= 1e-4 * np.abs(single.probe).max()


@pytest.mark.parametrize("failing_chunk", [0, 1])
def test_map_chunks_orders_results_and_raises_a_chunks_error(failing_chunk):
    """Chunks are spread over the calling thread and the pool (thread t takes chunks t,
    t + T, ...), results come back in chunk order, and an error in any chunk (the caller's
    or a worker's) reaches the caller."""
    from ptychompi.backends import Backend  # noqa: PLC0415
    from ptychompi.engines.base import Engine  # noqa: PLC0415

    engine = Engine.__new__(Engine)
    engine.chunk_size = 3
    with Backend(np, "cpu", None, 2) as engine.backend:
        out = engine.map_chunks(lambda t, sl: (t, sl.start), 10)
        assert out == [(0, 0), (1, 3), (0, 6), (1, 9)]

        def fail(t: int, sl: slice) -> None:
            if sl.start == 3 * failing_chunk:
                raise ValueError("chunk failed")

        with pytest.raises(ValueError, match="chunk failed"):
            engine.map_chunks(fail, 10)
