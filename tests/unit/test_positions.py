"""Position refinement (issue 18): the pieces, and scans with wrong positions.

The scans come from the robustness generator (:mod:`ptychompi.sim.matrix`): frames measured
at the true positions, reconstructed from positions with (a) random errors of 1.5 px RMS,
(b) a 2 % scale error with a 1° rotation, (c) both. Each case prints the position and object
errors without and with refinement next to the reconstruction from the true positions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from resume_check import assert_resumed_equals_whole

import ptychompi.app.api as api
from ptychompi.app.api import Reconstruction
from ptychompi.app.checkpoint import resume, write_checkpoint
from ptychompi.backends import Backend, select_backend
from ptychompi.config import config_from_dict
from ptychompi.engines import ENGINES
from ptychompi.engines.positions import (
    BETWEEN_BINS,
    PositionRefiner,
    affine_terms,
    central_differences,
    padded_tiles,
    shifted_probe,
    solve_affine,
)
from ptychompi.errors import ConfigError
from ptychompi.io.export import export_result
from ptychompi.io.results import read_result
from ptychompi.model.physics import Windows, subpixel_grid, subpixel_ramps, window_index
from ptychompi.ops import ProbeShifts
from ptychompi.sim.matrix import Case, make_scan
from ptychompi.sim.position_errors import perturb, rms_error, with_positions
from ptychompi.sim.position_runs import run_from

CASE = Case(grid=8, frame=64, diameter_px=24, overlap=0.7, photons=1e7, seed=1)
ITERATIONS = 100
RMS_PX = 1.5
POSITION_DROP = 3.0  # the bar: RMS position error falls at least 3x
# the bar for the object error is 1.3x that of the true positions. With the defaults
# (LSQML: positions between 1/4-px bins, the probe re-centred) LSQML meets it on these cases
# at 200 iterations (18 of 18 error draws, 0.87-0.95x; 17 of 18 at 150, 13 of 18 at 100,
# where the object has not always lost what it learnt from the wrong positions: the draw
# here reaches 1.3x between 150 and 200 as the positions' common offset, which follows the
# probe's re-centring, settles),
# DM (which with refinement is its LSQML refinement from the first iteration, as LSQML) at
# 200 iterations, ePIE (its probe left free, its object step held while positions move) at
# 200 iterations (measured at 150: 1.08x, 1.00x, 0.76x; 18 of 18 draws, 0.76-1.27x). Which basin
# a run ends in varies from one set of errors (and engine seed) to the next, so the other bars
# are the measured ratios over the draws with a margin of about 1.3 (a rounding difference can
# move a run to another basin):
# (engine, kind) -> refined / true-position error
OBJECT_RATIO = {("lsqml", "random"): 1.3, ("epie", "random"): 1.3, ("dm", "random"): 1.3,
                ("dm", "affine"): 1.3, ("lsqml", "affine"): 1.3, ("lsqml", "both"): 1.3,
                ("epie", "affine"): 1.3, ("epie", "both"): 1.3}
LSQML_ITERATIONS = 200  # every engine's cases: the 1.3x once the object has settled


@pytest.fixture(scope="module")
def sim():
    return make_scan(CASE)


_TRUTH: dict[tuple[str, int], dict] = {}


def reconstruct(sim, positions: np.ndarray, engine: str, correction: dict,
                iterations: int = ITERATIONS) -> dict:
    run = run_from(sim, positions, engine, iterations, correction)
    return {"rms": run.position_rms_px, "object": run.object_error}


def truth(sim, engine: str, iterations: int = ITERATIONS) -> dict:
    if (engine, iterations) not in _TRUTH:
        _TRUTH[engine, iterations] = reconstruct(sim, sim.positions_px, engine, {}, iterations)
    return _TRUTH[engine, iterations]


@pytest.mark.parametrize(("engine", "kind"), [
    ("lsqml", "random"), ("epie", "random"), ("dm", "random"), ("dm", "affine"),
    ("lsqml", "affine"), ("lsqml", "both"), ("epie", "affine"), ("epie", "both")])
def test_refinement_recovers_wrong_positions(sim, engine: str, kind: str) -> None:
    iterations = LSQML_ITERATIONS
    given = perturb(sim.positions_px, kind, np.random.default_rng(2), rms_px=RMS_PX)
    plain = reconstruct(sim, given, engine, {})  # (100 iterations: only printed)
    refined = reconstruct(sim, given, engine, {"enabled": True, "affine": kind != "random"},
                          iterations)
    best = truth(sim, engine, iterations)
    print(f"\n[positions] {engine} {kind} {iterations} it: position RMS {plain['rms']:.3f} -> "
          f"{refined['rms']:.3f} px; object error true {best['object']:.4f}, not refined "
          f"({ITERATIONS} it.) {plain['object']:.4f}, refined {refined['object']:.4f}")
    assert plain["rms"] >= 0.5
    assert refined["rms"] <= plain["rms"] / POSITION_DROP
    assert refined["object"] <= OBJECT_RATIO[engine, kind] * best["object"]
    assert refined["object"] < 0.5 * plain["object"]  # refinement is what makes it good


# ---------------------------------------------------------------------------- pieces
def test_affine_fit_recovers_a_transform() -> None:
    rng = np.random.default_rng(0)
    initial = rng.uniform(0, 100, (50, 2))
    transform = np.array([[1.02, 0.017], [-0.018, 0.99], [3.0, -1.5]])
    moved = np.concatenate([initial, np.ones((50, 1))], axis=1) @ transform
    halves = affine_terms(initial[:20], moved[:20]) + affine_terms(initial[20:], moved[20:])
    np.testing.assert_allclose(solve_affine(halves), transform, atol=1e-9)
    np.testing.assert_array_equal(solve_affine(affine_terms(initial[:2], moved[:2])),
                                  [[1, 0], [0, 1], [0, 0]])  # undetermined: the identity


def test_central_differences_of_a_ramp() -> None:
    r, c = np.mgrid[:6, :7]
    d_row, d_col = central_differences(np, (2.0 * r - 3j * c).astype(np.complex64))
    np.testing.assert_allclose(d_row, 2.0)
    np.testing.assert_allclose(d_col, -3j)


def test_residual_sums_equal_the_array_expressions_and_the_formula() -> None:
    """The sums of a residual an engine formed (LSQML's χ, reused by the refinement): the
    compiled kernel (object differences on the fly, one-sided at the object's edges) against
    numpy's array expressions (the GPU's code) and the formula written out."""
    rng = np.random.default_rng(5)
    h, w, m = 40, 45, 16

    def cplx(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    obj, probes, chi = cplx(h, w), cplx(2, 2, m, m), cplx(4, 2, m, m)
    rows, cols = np.array([0, 24, 10, 24]), np.array([0, 29, 5, 0])  # corners at the edges
    probe_of = np.array([1, 0, 1, 0])
    compiled = select_backend("cpu", workers=1).ops.residual_position_sums(
        probes, probe_of, chi, obj, Windows(rows, cols, None, m))
    reference = Backend(np, "cpu", None, 1, ops_kind="array").ops.residual_position_sums(
        probes, probe_of, chi, obj, Windows(rows, cols, window_index(rows, cols, m, w), m))
    d_row, d_col = central_differences(np, obj.astype(np.complex128))
    formula = np.zeros((4, 4))
    for j, (r, c) in enumerate(zip(rows, cols, strict=True)):
        for axis, d in enumerate((d_row, d_col)):
            g = probes[probe_of[j]] * d[r:r + m, c:c + m]
            formula[j, 2 * axis] = np.sum((np.conj(g) * chi[j]).real)
            formula[j, 2 * axis + 1] = np.sum(np.abs(g) ** 2)
    np.testing.assert_allclose(compiled, formula, rtol=1e-4)
    np.testing.assert_allclose(reference, compiled, rtol=1e-4)


def test_padded_tiles_hold_every_moved_window() -> None:
    """Windows moved by up to margin - 1 px stay in their tile, and every pixel that windows
    of two tiles can both cover lies in their halo."""
    rng = np.random.default_rng(1)
    frame, margin = 16, 3
    pos = rng.uniform(4, 60, (40, 2))
    shape = (int(pos.max()) + frame + 6, int(pos.max()) + frame + 6)
    tiles = padded_tiles(pos, frame, 4, None, margin, shape)
    moved = np.clip(pos + rng.uniform(-(margin - 1), margin - 1, pos.shape), 0,
                    shape[0] - frame)
    cover = []
    for t in tiles:
        mask = np.zeros(shape, bool)
        for r, c in np.floor(moved[t.indices]).astype(int):
            assert t.box.r0 <= r and r + frame <= t.box.r1
            assert t.box.c0 <= c and c + frame <= t.box.c1
            mask[r:r + frame, c:c + frame] = True
        cover.append(mask)
    for t in tiles:
        for u in tiles:
            if u.rank <= t.rank:
                continue
            both = cover[t.rank] & cover[u.rank]
            if both.any():
                halo = np.zeros(shape, bool)
                h = t.halos[u.rank]
                halo[h.r0:h.r1, h.c0:h.c1] = True
                assert not (both & ~halo).any()


@pytest.mark.parametrize(("engine", "bins", "default"), [("lsqml", 0, BETWEEN_BINS),
                                                         ("epie", 0, 0), ("dm", 8, 8)])
def test_refined_positions_are_placed_exactly(sim, engine: str, bins: int,
                                              default: int) -> None:
    """With ``position_correction.subpixel_bins: 0`` and refinement on, LSQML and ePIE place
    positions exactly (positions rounded to 1/8 px dither between bins as they are refined);
    DM keeps ``algorithm.subpixel_bins`` for its own iterations, and the LSQML refinement it
    hands over to places them exactly and is what the position refinement evaluates from
    then on; without refinement nothing changes. By default while refining ePIE places them
    exactly and LSQML in coarser bins with positions between them (``between_bins``)."""
    for enabled, exact, expected in ((True, True, bins), (False, True, 8),
                                     (True, False, default)):
        cfg = {"algorithm": {"name": engine, "iterations": 1,
                             "position_correction": {"enabled": enabled,
                                                     "subpixel_bins": 0 if exact else None}},
               "parallel": {"device": "cpu", "workers": 1}}
        with Reconstruction(cfg, scan=sim.as_scan()) as recon:
            assert recon.engine.cfg.subpixel_bins == expected
            assert recon.engine.refined_by() is recon.engine
            assert recon.engine.between_bins == (engine == "lsqml" and enabled and not exact)
            if engine == "dm":
                recon.engine._start_refinement()
                ml = recon.engine._ml
                assert ml.cfg.subpixel_bins == (
                    (0 if exact else BETWEEN_BINS) if enabled else 8)
                assert ml.between_bins == (enabled and not exact)
                assert recon.engine.refined_by() is recon.engine._ml


def test_between_bin_probes_follow_the_position() -> None:
    """A position between two sub-pixel bins sees its bin's shifted probe moved on to first
    order: close to the exact Fourier shift (far closer than the bin's probe), continuous
    across a bin edge (where the bin's probe jumps), the compiled kernel (one transform per
    position) as the array expressions (three per bin)."""
    probe = make_scan(dataclasses.replace(CASE, grid=3)).probe.astype(np.complex64)
    probe = probe.reshape(-1, *probe.shape[-2:])
    rows = 3 + np.array([0.02, 0.09, 0.1249, 0.1251, 0.16, 0.23, 0.374])  # bin edges 1/8, 3/8
    pos = np.stack([rows, 5.3 + 0.4 * (rows - 3)], axis=1)
    got, binned, exact = [], None, None
    for backend in (select_backend("cpu", workers=1), Backend(np, "cpu", None, 1,
                                                             ops_kind="array")):
        top, table, ids = subpixel_grid(pos, BETWEEN_BINS)
        spectrum = backend.fft2(probe)
        got.append(backend.ops.between_bin_probes(probe, ProbeShifts(
            spectrum, subpixel_ramps(backend, table, probe.shape[-1]), ids),
            pos - top - table[ids]))
        binned = backend.ops.shifted_probes(
            spectrum, subpixel_ramps(backend, table[ids], probe.shape[-1]), probe)
        exact = backend.ops.shifted_probes(
            spectrum, subpixel_ramps(backend, pos - top, probe.shape[-1]), probe)
    np.testing.assert_allclose(got[0], got[1], rtol=0, atol=1e-5 * np.abs(exact).max())

    def rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.norm((a - b).reshape(len(a), -1), axis=1) / np.linalg.norm(
            b.reshape(len(b), -1), axis=1)

    between, rounded = rel(got[0], exact), rel(binned, exact)
    assert between.max() < 0.01 and between.max() < 0.2 * rounded.max(), (between, rounded)
    # across the bin edge at 1/8 px: the first-order error's sign flips (0.65 % here), the
    # bins jump by a quarter of a pixel (6.6 %)
    jump, bin_jump = rel(got[0][3:4], got[0][2:3])[0], rel(binned[3:4], binned[2:3])[0]
    assert jump < 0.15 * bin_jump and bin_jump > 0.03, (jump, bin_jump)


def test_recentring_keeps_every_frame(sim) -> None:
    """The probe slid by a sub-pixel amount: shifted back to its starting centroid, with
    every position moved by the slide, each frame's modelled intensity stays (the exit waves
    move within their frames), and the centroid is back."""
    cfg = {"algorithm": {"name": "lsqml", "iterations": 3, "position_correction": {
        "enabled": True, "start": 99, "subpixel_bins": 0}},
           "parallel": {"device": "cpu", "workers": 1}}
    with Reconstruction(cfg, scan=sim.as_scan()) as recon:
        recon.run()  # a textured object
        engine, refiner = recon.engine, recon.engine.refiner
        assert refiner.reference is not None  # armed: the starting probe's centroid
        probe = sim.probe.astype(np.complex64)  # compact: no power wraps at the frame's edges
        engine.probe = probe.reshape(-1, *probe.shape[-2:])
        refiner.reference = refiner._centroid(engine)
        slide = np.array([0.37, -0.21])
        engine.probe = shifted_probe(engine.backend, engine.probe, slide)

        def intensities() -> np.ndarray:
            probes, probe_of = engine.probe_set(slice(None))
            psi = engine.backend.ops.exit_waves(probes, engine.object,
                                                engine.windows(slice(None)), probe_of)
            return np.abs(np.fft.fft2(psi)) ** 2

        before = intensities()
        d = refiner._recentre(engine)
        engine.move_positions(engine.data.positions + d)
        after = intensities()
        np.testing.assert_allclose(d, slide, atol=5e-3)  # (the Fresnel fringes wrap)
        np.testing.assert_allclose(refiner._centroid(engine), refiner.reference, atol=5e-3)
        kept = np.abs(after - before).max()
        engine.move_positions(engine.data.positions - d)  # without the positions' move
        lost = np.abs(intensities() - before).max()
        assert kept < 1e-3 * before.max() and lost > 10 * kept, (kept, lost, before.max())


@pytest.mark.parametrize("bins", [0, None])
def test_lsqml_refinement_reuses_its_residuals_on_both_operations(sim, monkeypatch,
                                                                  bins: int | None) -> None:
    """LSQML hands its residuals χ to the refinement (no separate pass over the positions),
    and the numpy reference operations (``parallel.operations: array``, the GPU's code) refine
    the positions as the compiled ones do: placed exactly (``subpixel_bins: 0``) and between
    bins (the default: the compiled path one transform per position, the array path three
    per bin)."""
    def no_pass(*_: object) -> None:
        raise AssertionError("a separate pass although LSQML formed the residuals")

    monkeypatch.setattr(PositionRefiner, "misfit_terms", no_pass)
    given = perturb(sim.positions_px, "random", np.random.default_rng(2), rms_px=RMS_PX)
    results = []
    for backend in (select_backend("cpu", workers=1), Backend(np, "cpu", None, 1,
                                                             ops_kind="array")):
        monkeypatch.setattr(api, "select_backend", lambda *a, b=backend, **k: b)
        cfg = {"algorithm": {"name": "lsqml", "iterations": 6, "position_correction": {
            "enabled": True, "start": 0, "update_every": 1, "subpixel_bins": bins}}}
        with Reconstruction(cfg, scan=with_positions(sim.as_scan(), given,
                                                     sim.pixel_size_m)) as recon:
            recon.run()
            results.append((recon.refined_positions(), recon.object))
    (compiled, obj), (array, obj_array) = results
    assert np.abs(compiled - given).max() > 0.5  # the positions moved
    np.testing.assert_allclose(array, compiled, atol=1e-3)
    np.testing.assert_allclose(obj_array, obj, rtol=1e-3, atol=1e-2)


def test_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="max_residual = 9.0 is above max_total"):
        config_from_dict({"algorithm": {"position_correction": {"max_residual": 9}}})
    with pytest.raises(ConfigError, match="update_every = 0 is below its minimum"):
        config_from_dict({"algorithm": {"position_correction": {"update_every": 0}}})
    cfg = config_from_dict({})
    assert cfg.algorithm.position_correction.enabled is False


@pytest.mark.parametrize("engine", ["epie", "dm", "lsqml"])
def test_moved_positions_equal_a_fresh_engine(sim, engine: str) -> None:
    """Engine.move_positions leaves no state of the old positions: an engine moved to other
    positions takes the same step as one built at them."""
    cfg = {"algorithm": {"name": engine, "iterations": 2,
                         "position_correction": {"enabled": True, "start": 99}},
           "parallel": {"device": "cpu", "workers": 1}}
    with Reconstruction(cfg, scan=sim.as_scan()) as recon:
        moved = recon.engine
        data = moved.data
        shift = np.random.default_rng(3).uniform(-1.5, 1.5, data.positions.shape)
        target = data.positions + shift
        fresh = ENGINES[engine](moved.cfg, dataclasses.replace(data, positions=target.copy()),
                                moved.exchange, moved.backend, moved.probe.copy(),
                                moved.object.copy(), moved.schedule)
        moved.move_positions(target)
        moved._reset()
        for _ in range(2):
            moved.step()
            fresh.step()
        np.testing.assert_array_equal(moved.object, fresh.object)
        np.testing.assert_array_equal(moved.probe, fresh.probe)
        fresh.close()


def test_lsqml_resume_with_updates_from_its_residuals(sim, tmp_path: Path) -> None:
    """LSQML's default updates (after every iteration, from its own residuals): a run resumed
    from a checkpoint equals an uninterrupted one bit for bit."""
    given = perturb(sim.positions_px, "affine", np.random.default_rng(4), rms_px=RMS_PX)
    scan = with_positions(sim.as_scan(), given, sim.pixel_size_m)
    cfg = {"algorithm": {"name": "lsqml", "iterations": 7,  # settle off: moves from 1 on
                         "position_correction": {"enabled": True, "affine": True,
                                                 "settle": None}},
           "parallel": {"device": "cpu"}, "output": {"directory": str(tmp_path)}}
    refined = assert_resumed_equals_whole(cfg, scan, tmp_path, 4)
    assert rms_error(refined, given) > 0.05  # moved after every iteration from 1 on


def test_result_checkpoint_and_exports(sim, tmp_path: Path) -> None:
    """Refined positions in result.h5 next to the input ones, in the CSV and PNG exports,
    and in checkpoints: a resumed run equals an uninterrupted one bit for bit."""
    given = perturb(sim.positions_px, "random", np.random.default_rng(4), rms_px=RMS_PX)
    scan = with_positions(sim.as_scan(), given, sim.pixel_size_m)
    cfg = {"algorithm": {"name": "dm", "iterations": 8,
                         "position_correction": {"enabled": True, "start": 1, "settle": None}},
           "parallel": {"device": "cpu"}, "output": {"directory": str(tmp_path)}}
    with Reconstruction(cfg, scan=scan) as whole:
        whole.run()
        expected = (whole.object, whole.refined_positions())
        whole.save(str(tmp_path / "result.h5"))
    with Reconstruction(cfg, scan=scan) as first:
        first.step(5)
        write_checkpoint(first, tmp_path)
    with Reconstruction(cfg, scan=scan) as again:
        assert resume(again, tmp_path) == 5
        again.run()
        np.testing.assert_array_equal(again.object, expected[0])
        np.testing.assert_array_equal(again.refined_positions(), expected[1])
    saved = read_result(tmp_path / "result.h5")
    np.testing.assert_array_equal(saved.refined_positions, expected[1])
    assert rms_error(saved.refined_positions, saved.positions) > 0.01  # they moved
    csv = [p for p in export_result(tmp_path / "result.h5", "csv")
           if p.endswith("positions_refined.csv")]
    back = np.loadtxt(csv[0], delimiter=",") / saved.pixel_size
    np.testing.assert_allclose(back, saved.refined_positions, atol=1e-6)
    png = [p for p in export_result(tmp_path / "result.h5", "png")
           if p.endswith("positions.png")]
    img = np.asarray(Image.open(png[0]).convert("RGB"))
    assert ((img[..., 0] > 150) & (img[..., 1] < 80)).sum() > 50  # red arrows drawn


def test_benchmark_script_runs(tmp_path: Path) -> None:
    """benchmarks/positions.py end to end at a tiny size (quality and cost tables)."""
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "positions.py"
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--grid", "5", "--frame", "32", "--iterations", "12",
         "--engines", "lsqml", "--kinds", "random", "--cost-grid", "4", "--cost-frame", "32",
         "--cost-iterations", "1", "--warmup", "1", "--rounds", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    assert rows["quality"][0]["refined"]["position_rms_px"] >= 0
    assert rows["cost"][0]["ratio"] > 0 and rows["cost"][0]["ratio_every"] > 0


def test_dm_refines_positions_as_lsqml_from_the_start(sim) -> None:
    """With position refinement DM hands the tile to its LSQML refinement at the first
    iteration (DM's projections would fit the object to the wrong positions' distortion):
    the run equals LSQML's with the same options bit for bit, and DM's exit waves are freed."""
    given = perturb(sim.positions_px, "random", np.random.default_rng(4), rms_px=RMS_PX)
    scan = with_positions(sim.as_scan(), given, sim.pixel_size_m)
    out = []
    for name in ("dm", "lsqml"):
        cfg = {"algorithm": {"name": name, "iterations": 6,  # positions move from 1 on
                             "position_correction": {"enabled": True, "settle": None}},
               "parallel": {"device": "cpu"}}
        with Reconstruction(cfg, scan=scan) as recon:
            recon.step(1)
            if name == "dm":
                assert recon.engine.waves is None and recon.engine.refined_by() is not recon.engine
            recon.run()
            out.append((recon.object, recon.probe, recon.refined_positions()))
    for dm, lsqml in zip(*out, strict=True):
        np.testing.assert_array_equal(dm, lsqml)
    assert rms_error(out[0][2], given) > 0.05  # the positions moved


def test_affine_fit_in_result_inspect_and_live(sim, tmp_path: Path) -> None:
    """The last affine fit goes into result.h5 (next to the refined positions) and into
    checkpoints, `ptychompi inspect` shows it with how far the positions moved, and the live
    status carries the positions' RMS move."""
    from ptychompi.app.live import LiveWriter, read_status  # noqa: PLC0415
    from ptychompi.app.summary import inspect_file  # noqa: PLC0415

    given = perturb(sim.positions_px, "affine", np.random.default_rng(4))
    scan = with_positions(sim.as_scan(), given, sim.pixel_size_m)
    cfg = {"algorithm": {"name": "lsqml", "iterations": 6,
                         "position_correction": {"enabled": True, "start": 1,
                                                 "update_every": 1, "affine": True,
                                                 "settle": None}},  # moves from 1 on
           "parallel": {"device": "cpu"}}
    with Reconstruction(cfg, scan=scan) as recon:
        recon.step(4)
        write_checkpoint(recon, tmp_path)
        recon.run()
        transform = recon.engine.refiner.transform.copy()
        recon.save(str(tmp_path / "result.h5"))
        live = LiveWriter(tmp_path, 1, 6, rank=0)
        live.update(recon)
        refined = recon.refined_positions()
    saved = read_result(tmp_path / "result.h5")
    np.testing.assert_array_equal(saved.position_transform, transform)
    model = np.concatenate([saved.positions, np.ones((len(given), 1))], axis=1) @ transform
    assert np.abs(model - saved.refined_positions).max() <= 4.0  # max_total
    assert not np.allclose(transform, [[1, 0], [0, 1], [0, 0]])  # a fit, not the identity
    text = inspect_file(tmp_path / "result.h5")
    moved = np.hypot(*(refined - saved.positions).T)
    assert f"moved by {np.sqrt(np.mean(moved ** 2)):.3f} px RMS" in text
    assert "affine     scale" in text and "rotation" in text
    status = read_status(tmp_path)
    assert status["positions"]["rms_shift_px"] == pytest.approx(np.sqrt(np.mean(moved ** 2)))
    with Reconstruction(cfg, scan=scan) as again:  # the checkpoint holds the fit
        assert resume(again, tmp_path) == 4
        assert again.engine.refiner.transform is not None
        assert not np.array_equal(again.engine.refiner.transform, transform)  # iteration 4's
