"""Scans with wrong positions, for testing and measuring position refinement (issue 18).

The frames of a simulated scan (:mod:`ptychompi.sim.matrix`) stay as measured; the positions
the reconstruction is given are the true ones with random errors, a scale and rotation error of
the stage, or both.
"""

from __future__ import annotations

import numpy as np

from ..data.scan import ArrayScan

KINDS = ("random", "affine", "both")


def perturb(true: np.ndarray, kind: str, rng: np.random.Generator, rms_px: float = 1.0,
            scale: float = 0.02, degrees: float = 1.0) -> np.ndarray:
    """``true`` (N, 2) px with errors: ``random`` (normal, ``rms_px`` RMS per position),
    ``affine`` (``1 + scale`` times larger, rotated by ``degrees`` about the centre) or
    ``both``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {KINDS}")
    out = np.array(true, np.float64)
    if kind in ("random", "both"):
        out += rng.normal(0.0, rms_px / np.sqrt(2.0), out.shape)
    if kind in ("affine", "both"):
        a = np.deg2rad(degrees)
        rot = (1.0 + scale) * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        centre = out.mean(axis=0)
        out = (out - centre) @ rot.T + centre
    return out


def rms_error(estimate: np.ndarray, true: np.ndarray) -> float:
    """RMS distance (px) between two position lists after removing their mean offset (a
    common shift of all positions is an ambiguity of ptychography)."""
    d = np.asarray(estimate, np.float64) - np.asarray(true, np.float64)
    d -= d.mean(axis=0)
    return float(np.sqrt((d ** 2).sum(axis=1).mean()))


def with_positions(scan: ArrayScan, positions_px: np.ndarray, pixel_size_m: float) -> ArrayScan:
    """``scan`` (its frames, geometry) with other positions (px of ``pixel_size_m``)."""
    return ArrayScan(path=scan.path, n_frames=scan.n_frames, frame_shape=scan.frame_shape,
                     dtype=scan.dtype, positions_m=np.asarray(positions_px) * pixel_size_m,
                     frames=scan.frames, geometry=scan.geometry)
