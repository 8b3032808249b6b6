"""ePIE hands its own residuals to the position refinement (issue 18).

Each visit's ``χ = ψ' − ψ`` gives its position's gradient sums against the object before the
position's update (:meth:`ptychompi.ops.Operations.epie_chunk` with ``positions``), so that the
positions move after every iteration without a pass of the refiner's own. The sums equal
those of the refiner's formula on the same residual, on every operations path; without
refinement nothing of this runs; and a small scan's positions and object still recover.
"""

from __future__ import annotations

import numpy as np
import pytest

import ptychompi.app.api as api
from ptychompi.backends import Backend, select_backend
from ptychompi.backends.cpu import fftw
from ptychompi.engines import epie as epie_module
from ptychompi.engines.positions import PositionRefiner, central_differences
from ptychompi.model import physics
from ptychompi.model.physics import Propagator, Windows, window_index
from ptychompi.ops import EpieJob, ProbeShifts
from ptychompi.ops.array_ops import ArrayOps
from ptychompi.sim.matrix import Case, make_scan
from ptychompi.sim.position_errors import perturb, rms_error
from ptychompi.sim.position_runs import run_from

M, H, W = 32, 110, 110
# disjoint windows a pixel apart or more, two at the object's edges (one-sided differences)
ROWS, COLS = np.array([0, 0, 40, 78, 33]), np.array([0, 33, 0, 78, 40])


def rand_complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def reference_sums(probes: np.ndarray, chi: np.ndarray, obj: np.ndarray) -> np.ndarray:
    """The refiner's formula in double precision: ``Σ Re(conj(P ∂O) χ)``, ``Σ |P ∂O|²`` per
    axis, ∂O the object's central differences."""
    out = np.empty((len(ROWS), 4))
    for axis, d in enumerate(central_differences(np, obj.astype(np.complex128))):
        for j, (r, c) in enumerate(zip(ROWS, COLS, strict=True)):
            g = probes[j if len(probes) > 1 else 0].astype(np.complex128) * d[r:r + M, c:c + M]
            out[j, 2 * axis] = (g.conj() * chi[j]).real.sum()
            out[j, 2 * axis + 1] = (np.abs(g) ** 2).sum()
    return out


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("shifted", [False, True])
def test_epie_chunk_position_sums_are_the_refiners_on_every_path(modes: int,
                                                                  shifted: bool) -> None:
    """The sums each visit hands over equal the refiner's (``misfit_terms``'
    :meth:`residual_position_sums`) on the same residual against the object before the
    update; computing them changes nothing else (object, probe gradient, error)."""
    rng = np.random.default_rng(modes + 2 * shifted)
    obj, probe = rand_complex(rng, (H, W)), rand_complex(rng, (modes, M, M))
    amplitudes = rng.random((6, M, M)).astype(np.float32)
    frames = np.array([3, 1, 0, 5, 2])
    compiled = select_backend("cpu", workers=1)
    array = Backend(np, "cpu", None, 1, ops_kind="array")
    assert isinstance(array.ops, ArrayOps)
    results = {}
    for name, be, fuse in (("fused", compiled, True), ("composed", compiled, False),
                           ("array", array, True)):
        if name == "fused" and not (fftw.native_available() and be.ops.fuses((M, M))):
            continue
        be.ops.fuse = fuse
        shifts = None
        if shifted:  # positions 1 and 2 share a shift
            table = physics.subpixel_ramps(be, np.random.default_rng(9).uniform(
                -0.5, 0.5, (4, 2)), M)
            shifts = ProbeShifts(spectrum=be.fft2(probe), table=table,
                                 ids=np.array([2, 0, 0, 1, 3]))
        win = Windows(ROWS, COLS, window_index(ROWS, COLS, M, W) if name == "array" else None,
                      M)
        prop = Propagator.build(be, "farfield", M)
        outs = []
        for with_sums in (True, False):
            o = obj.copy()
            sums = np.full((len(ROWS), 4), np.nan) if with_sums else None
            err, grad = be.ops.epie_chunk(EpieJob(
                amplitudes=amplitudes, frames=frames, win=win, obj=o, probe=probe,
                shifts=shifts, steps=(0.7, 0.3), grad="stack" if shifted else "sum",
                prop=prop, positions=sums))
            outs.append((err, grad, o, sums))
        (err, grad, o, sums), (err0, grad0, o0, _) = outs
        assert np.array_equal(o, o0) and not np.array_equal(o, obj)
        assert np.array_equal(grad, grad0) and err == err0
        # the residual of the composed steps, against the object before the update
        distinct, member = be.ops.shifted_set(probe, shifts)
        probes = distinct if member is None else distinct[member]
        psi = be.ops.exit_waves(probes, obj, win)
        projected, _ = be.ops.modulus_project(prop.forward(psi), amplitudes[frames])
        chi = prop.backward(projected, overwrite=True) - psi
        expected = be.ops.residual_position_sums(probes, None, chi, obj, win)
        formula = reference_sums(np.asarray(probes), np.asarray(chi), obj)
        scale = np.abs(formula).max(axis=0)
        np.testing.assert_allclose(sums, formula, rtol=1e-4, atol=1e-5 * scale.max())
        if name != "array":  # the same compiled kernel on the same residual: to the bit
            np.testing.assert_array_equal(sums, expected)
        results[name] = sums
        be.ops.fuse = True
    if "fused" in results:
        np.testing.assert_array_equal(results["fused"], results["composed"])


CASE = Case(grid=8, frame=64, diameter_px=24, overlap=0.7, photons=1e7, seed=1)


@pytest.fixture(scope="module")
def sim():
    return make_scan(CASE)


def run(sim, positions: np.ndarray, correction: dict,
        iterations: int) -> tuple[np.ndarray, float, float]:
    out = run_from(sim, positions, "epie", iterations, correction)
    return out.positions, out.object_error, out.position_rms_px


def test_without_refinement_epie_computes_no_sums_and_keeps_its_batches(sim,
                                                                          monkeypatch) -> None:
    """Without refinement, with refinement not yet armed and with the pass (the default)
    ePIE asks for no position sums and splits its batches as before (windows may touch)."""
    frames, jobs = [], []
    batches, chunk = epie_module.disjoint_batches, epie_module.EPIE._update

    def spy_batches(order, rows, cols, frame, limit):
        frames.append(frame)
        return batches(order, rows, cols, frame, limit)

    def spy_update(self, batch, *args):
        jobs.append(args[-1] if len(args) == 5 else None)
        return chunk(self, batch, *args)

    monkeypatch.setattr(epie_module, "disjoint_batches", spy_batches)
    monkeypatch.setattr(epie_module.EPIE, "_update", spy_update)
    for correction in ({}, {"enabled": True, "start": 99, "epie_residuals": True},
                       {"enabled": True, "start": 0, "settle": None},
                       {"enabled": True, "start": 0, "settle": None, "epie_residuals": True}):
        frames.clear()
        jobs.clear()
        run(sim, sim.positions_px, correction, 2)
        armed = correction.get("start") == 0 and correction.get("epie_residuals", False)
        assert frames == [CASE.frame + armed] * 2
        assert all((j is not None) == armed for j in jobs) and jobs


def test_refinement_uses_epies_residuals_and_no_pass(sim, monkeypatch) -> None:
    """With ``epie_residuals`` and ``update_every`` null ePIE's own sums move the positions
    after every iteration (no pass over the positions), the numpy reference operations (a
    GPU's code) alike; ``epie_residuals: false`` (the default) and a number for
    ``update_every`` keep the pass."""
    given = perturb(sim.positions_px, "random", np.random.default_rng(2), rms_px=1.5)
    correction = {"enabled": True, "start": 0, "settle": None, "epie_residuals": True}
    passes = []
    real = PositionRefiner.misfit_terms

    def counted(self, engine):
        passes.append(engine.iteration)
        return real(self, engine)

    monkeypatch.setattr(PositionRefiner, "misfit_terms", counted)
    results = []
    for backend in (select_backend("cpu", workers=1),
                    Backend(np, "cpu", None, 1, ops_kind="array")):
        monkeypatch.setattr(api, "select_backend", lambda *a, b=backend, **k: b)
        results.append(run(sim, given, correction, 5)[0])
    assert passes == []
    (compiled, array) = results
    assert rms_error(compiled, sim.positions_px) < 0.8 * rms_error(given, sim.positions_px)
    np.testing.assert_allclose(array, compiled, atol=1e-3)
    monkeypatch.setattr(api, "select_backend", select_backend)
    run(sim, given, {**correction, "epie_residuals": False}, 5)
    assert passes == [0, 4]
    passes.clear()
    run(sim, given, {**correction, "update_every": 2}, 5)
    assert passes == [0, 2, 4]


def test_refinement_recovers_a_small_scan_and_harms_no_true_one(sim) -> None:
    """From 1.5 px random errors the positions' error falls ≥ 3x and the object ends within
    1.3x that of the true positions; from the true positions refinement keeps the object
    within 1.3x of the unrefined one (do no harm)."""
    iterations = 150
    given = perturb(sim.positions_px, "random", np.random.default_rng(2), rms_px=1.5)
    _, true_error, _ = run(sim, sim.positions_px, {}, iterations)
    own = {"enabled": True, "epie_residuals": True}
    _, refined_error, rms = run(sim, given, own, iterations)
    _, kept_error, drift = run(sim, sim.positions_px, own, iterations)
    print(f"\n[epie positions] true {true_error:.4f}; from 1.5 px errors {refined_error:.4f} "
          f"(RMS {rms:.3f} px); from true positions {kept_error:.4f} (drift {drift:.3f} px)")
    assert rms <= rms_error(given, sim.positions_px) / 3
    assert refined_error <= 1.3 * true_error
    assert kept_error <= 1.3 * true_error and drift < 0.1
