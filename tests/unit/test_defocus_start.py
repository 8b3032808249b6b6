"""The starting probe's side of the focus, read from the drift of the shadow image between
neighbouring patterns (:mod:`ptychompi.model.defocus`), and what it does for Gaussian beams."""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi.model.defocus import defocus_sign, drift_grid, drift_scores, neighbour_spacing
from ptychompi.sim import matrix as sim_matrix
from ptychompi.sim.evaluate import evaluate
from ptychompi.sim.matrix import Case, make_scan

GRID, FRAME = 12, 64


def _sign(scan) -> int:
    amplitudes = np.fft.ifftshift(np.sqrt(scan.frames), axes=(-2, -1))  # engines' layout
    mean = amplitudes.mean(axis=0)
    spacing = neighbour_spacing(scan.positions_px)
    kappas = drift_grid(FRAME, spacing)
    scores = drift_scores(amplitudes, scan.positions_px, mean, kappas)
    return defocus_sign(kappas, scores, FRAME, spacing)


def _mirrored(monkeypatch) -> None:
    """Probes on the other side of the focus: P -> conj(P(-r)) (same far-field intensity)."""
    make = sim_matrix.make_matrix_probe

    def twin(*args, **kwargs):
        p = make(*args, **kwargs)[0]
        return np.conj(np.roll(p[::-1, ::-1], (1, 1), (0, 1)))[None]

    monkeypatch.setattr(sim_matrix, "make_matrix_probe", twin)


@pytest.mark.parametrize("probe,expected", [("focused", 1), ("gaussian", -1), ("pinhole", 1)])
def test_sign_of_the_defocus_from_the_data(monkeypatch, probe, expected):
    """The focused probe's spectral curvature is positive, the Gaussian's negative; the
    Fresnel-fringed pinhole shows no drift (the usual sign). Mirrored probes flip the
    answer where there is one."""
    case = Case(probe=probe).scaled(GRID, FRAME)
    assert _sign(make_scan(case)) == expected
    _mirrored(monkeypatch)
    assert _sign(make_scan(case)) == (-expected if probe != "pinhole" else 1)


def test_no_pairs_no_answer():
    kappas = drift_grid(FRAME, 8.0)
    assert defocus_sign(kappas, np.zeros(3 * len(kappas) + 1), FRAME, 8.0) == 1
    one = drift_scores(np.ones((1, FRAME, FRAME)), np.zeros((1, 2)), np.ones((FRAME, FRAME)),
                       kappas)
    assert not one.any()


@pytest.mark.parametrize("seed", [1, 2])
def test_gaussian_beam_at_low_dose_in_every_visiting_order(seed):
    """The Gaussian beam at 1e4 photons ended in one of two states with the start defocused
    to the wrong side (ePIE 0.58-0.59 in every order, LSQML 0.56 in one); started on the
    side the data show, every engine reaches about the true probe's 0.21-0.22 here."""
    scan = make_scan(Case(probe="gaussian", photons=1e4).scaled(GRID, FRAME))
    for engine in ("epie", "dm", "lsqml"):
        row = evaluate(scan, engine, 40, seed=seed)
        assert row["finite"] and row["object_error"] <= 0.3, (engine, row)
