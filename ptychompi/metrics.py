"""Quality metrics against a ground truth (simulations and tests)."""

from __future__ import annotations

import numpy as np


def illuminated_region(probe: np.ndarray, positions_px: np.ndarray, shape: tuple[int, int],
                       level: float = 0.1) -> np.ndarray:
    """Pixels whose summed illumination Σ_j |P|² is at least ``level`` of its maximum."""
    power = (np.abs(np.asarray(probe).reshape(-1, *probe.shape[-2:])) ** 2).sum(axis=0)
    m0, m1 = power.shape
    weight = np.zeros(shape)
    for r, c in np.round(positions_px).astype(int):
        weight[r:r + m0, c:c + m1] += power
    return weight >= level * weight.max()


def aligned_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """``min_c ‖c·x − t‖ / ‖t‖`` with c one complex factor.

    The factor removes the global phase and the ptychographic scale ambiguity (O·s, P/s).
    """
    x, t = np.ravel(estimate), np.ravel(truth)
    c = np.vdot(x, t) / max(np.vdot(x, x).real, 1e-30)
    return float(np.linalg.norm(c * x - t) / np.linalg.norm(t))


def object_error(estimate: np.ndarray, estimate_positions: np.ndarray, truth: np.ndarray,
                 truth_positions: np.ndarray, truth_probe: np.ndarray,
                 level: float = 0.1) -> float:
    """Normalised, phase-invariant error of a reconstructed object against the truth.

    The two objects are aligned by the (integer) offset between their position lists; the
    comparison covers the truth pixels illuminated at ``level`` of the maximum or more.
    """
    offset = np.round(np.median(np.asarray(estimate_positions) - np.asarray(truth_positions),
                                axis=0)).astype(int)
    region = illuminated_region(truth_probe, truth_positions, truth.shape, level)
    rows, cols = np.nonzero(region)
    er, ec = rows + offset[0], cols + offset[1]
    inside = (er >= 0) & (er < estimate.shape[0]) & (ec >= 0) & (ec < estimate.shape[1])
    if not inside.all():
        raise ValueError("the estimate does not cover the truth's illuminated region")
    return aligned_error(estimate[er, ec], truth[rows, cols])
