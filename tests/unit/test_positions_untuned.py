"""Position refinement on a generator scan it was not tuned on (issue 18).

The refinement's rules were tuned on test_positions' 8×8 texture scan (70 % overlap, 1e7
photons). Here the robustness generator's own settings: a photograph with sharp edges, a
Fresnel-fringed pinhole beam, 62 % overlap, 1e6 photons, a jittered 12×12 raster, and 1 px
RMS random errors, the issue's stage error (2 % scale, 1° rotation), or both. The scan-wide
linear part of the moves steps as one (:meth:`PositionRefiner._split_linear`): the
per-position gains alone cut it with the noise, and it converged slowly. LSQML steps it along
the object-position valley (:func:`ptychompi.ops.steps.valley_equations`; by default, with a
flat beam): moved alone, against an object that has absorbed the error, the positions'
linear part converged over hundreds of iterations. ePIE steps it as one by the moves' fit
(also by default, with a flat beam).
"""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi.backends import Backend
from ptychompi.config import PositionCorrectionConfig
from ptychompi.engines.positions import (
    VALLEY_CURVED,
    PositionRefiner,
    make_refiner,
    probe_curvature_waves,
)
from ptychompi.model.physics import Windows
from ptychompi.ops.cpu_ops import CpuOps
from ptychompi.ops.steps import valley_equations, valley_terms, window_differences
from ptychompi.parallel.serial_exchange import SerialExchange
from ptychompi.sim.matrix import Case, make_matrix_probe, make_scan, mirrored
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


_TRUE: dict[str, float] = {}


def true_positions_error(photo, engine: str) -> float:
    """The object error of the same engine at the true positions (once per engine)."""
    if engine not in _TRUE:
        _TRUE[engine] = reconstruct(photo, photo.positions_px, engine, {})[0]
    return _TRUE[engine]


@pytest.mark.parametrize(("engine", "kind", "affine"), [
    ("lsqml", "random", True), ("epie", "random", True), ("lsqml", "both", True),
    ("lsqml", "affine", False), ("epie", "affine", False)])  # the last two with the
# defaults: LSQML's valley step, ePIE's fit of its moves' linear part (a flat beam)
def test_refinement_recovers_errors_on_an_untuned_scan(photo, engine: str, kind: str,
                                                       affine: bool) -> None:
    given = perturb(photo.positions_px, kind, np.random.default_rng(7), rms_px=1.0)
    best = true_positions_error(photo, engine)
    refined, rms = reconstruct(photo, given, engine, {"enabled": True, "affine": affine})
    start = rms_error(given, photo.positions_px)
    print(f"\n[untuned positions] {engine} {kind} affine={affine}: position RMS {start:.3f} -> "
          f"{rms:.3f} px; object error true {best:.4f}, refined {refined:.4f} "
          f"({refined / best:.2f}x)")
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


def test_valley_terms_are_the_exit_wave_derivatives() -> None:
    """Compiled and array terms give ``G = Σ Re(conj(h_i) h_j)``, ``N = Σ Re(conj(h_i) χ)``
    with ``h_ab = −P ∂_aO w_b`` formed explicitly (two modes, windows at the edges); the
    compiled pass's position sums are the position kernel's."""
    rng = np.random.default_rng(3)
    m, b, k = 16, 5, 2

    def complex_normal(*shape: int) -> np.ndarray:
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)

    obj, probes = complex_normal(60, 60), complex_normal(1, k, m, m)
    chi = complex_normal(b, k, m, m)
    win = Windows(np.array([0, 5, 10, 44, 20]), np.array([3, 0, 44, 20, 7]), None, m)
    d_row, d_col = window_differences(np, obj, win)
    w = np.arange(m) - m / 2
    h = np.stack([(-(probes * d[:, None]) * wb).reshape(b, -1).astype(np.complex128)
                  for d in (d_row, d_col) for wb in (w[:, None], w[None, :])], axis=1)
    flat = chi.reshape(b, -1).astype(np.complex128)
    gram = np.einsum("bip,bjp->ij", h.conj(), h).real
    num = np.einsum("bip,bp->i", h.conj(), flat).real
    array_terms = valley_terms(np, probes, chi, d_row, d_col).sum(axis=0)
    both = CpuOps.residual_refinement_sums(None, probes, None, chi, obj, win)
    sums, compiled = both[:, :4], both[:, 4:].sum(axis=0)
    # the one pass's position sums are those of the position kernel, to the bit
    np.testing.assert_array_equal(
        sums, CpuOps.residual_position_sums(None, probes, None, chi, obj, win))
    array_both = Backend(np, "cpu", None, 1, ops_kind="array").ops \
        .residual_refinement_sums(probes, None, chi, obj, win)
    array_sums, array_ops = array_both[:, :4], array_both[:, 4:].sum(axis=0)
    np.testing.assert_allclose(array_sums, sums, rtol=1e-5, atol=1e-5 * np.abs(sums).max())
    for terms in (array_terms, compiled, array_ops):
        g, n = valley_equations(terms)
        np.testing.assert_allclose(g, gram, rtol=1e-5)
        np.testing.assert_allclose(n, num, rtol=1e-5, atol=1e-5 * np.abs(num).max())


def test_probe_curvature_separates_flat_and_curved_beams() -> None:
    """The valley's gate: a pinhole's Fresnel fringes and a Gaussian beam pass, a defocused
    zone plate's beam (either side of the focus: the sign flips) does not."""
    class Host:  # a backend's asnumpy: the host arrays pass through
        @staticmethod
        def asnumpy(a: np.ndarray) -> np.ndarray:
            return a

    waves = {kind: probe_curvature_waves(Host, make_matrix_probe(kind, 64, 20.0))
             for kind in ("pinhole", "gaussian", "focused")}
    assert abs(waves["pinhole"]) < VALLEY_CURVED / 4
    assert abs(waves["gaussian"]) < VALLEY_CURVED
    assert abs(waves["focused"]) > 2 * VALLEY_CURVED
    flipped = probe_curvature_waves(Host, mirrored(make_matrix_probe("focused", 64, 20.0)))
    assert flipped == pytest.approx(-waves["focused"], rel=0.05)


FOCUSED = Case(object="photo", probe="focused", grid=12, frame=64, diameter_px=20.0,
               mirrored=True)  # the sample on the far side of the focus


def test_focused_beam_with_random_errors() -> None:
    """A focused beam (the far side of the focus), 1 px random errors, LSQML with the
    defaults: the scan keeps its input's scale and shear, which a curved beam trades against
    its defocus, and only the rotation steps along the valley. Before, the start's side of the
    focus followed the wrong positions (object error 0.69, positions 1.0 -> 1.5 px). From the
    true positions the refinement must not drift."""
    sim = make_scan(FOCUSED)
    given = perturb(sim.positions_px, "random", np.random.default_rng(7), rms_px=1.0)
    best = reconstruct(sim, sim.positions_px, "lsqml", {})[0]
    plain = reconstruct(sim, given, "lsqml", {})[0]
    refined, rms = reconstruct(sim, given, "lsqml", {"enabled": True})
    stayed, drift = reconstruct(sim, sim.positions_px, "lsqml", {"enabled": True})
    start = rms_error(given, sim.positions_px)
    print(f"\n[focused positions] RMS {start:.3f} -> {rms:.3f} px; object error true {best:.4f}, "
          f"unrefined {plain:.4f}, refined {refined:.4f} ({refined / best:.2f}x); from the "
          f"true positions {drift:.3f} px, {stayed:.4f}")
    assert rms <= start / POSITION_DROP
    assert refined <= 0.5 * plain
    # the 1.3x is not met on this beam (BENCHMARKS): here, no collapse and no drift
    assert drift <= 0.1 and stayed <= 1.5 * best
