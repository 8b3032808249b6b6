"""One reconstruction of a simulated scan from given positions, scored against its truth:
the runs that position refinement's tests and benchmark compare (issue 18)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..app.api import Reconstruction
from ..model.metrics import registered_object_error
from .matrix import MatrixScan
from .position_errors import rms_error, with_positions


@dataclass(frozen=True)
class PositionRun:
    """Where a run left the positions (refined, else as given) and how far from the truth."""

    positions: np.ndarray  # (N, 2) px
    position_rms_px: float  # RMS distance from the true positions, mean offset removed
    object_error: float  # registered against the true object
    seconds: float


def run_from(scan: MatrixScan, positions: np.ndarray, engine: str, iterations: int,
             correction: dict[str, Any], seed: int = 0) -> PositionRun:
    """Reconstruct ``scan`` from ``positions`` (px) with ``engine`` on the CPU for
    ``iterations`` (``correction``: ``algorithm.position_correction``; ``seed``: the
    engine's random order) and score it. The object error's first search is in half pixels:
    probe and object may slide together against the positions by about half a pixel (an
    ambiguity)."""
    cfg = {"algorithm": {"name": engine, "iterations": iterations, "seed": seed,
                         "position_correction": correction},
           "parallel": {"device": "cpu"}}
    start = time.perf_counter()
    with Reconstruction(cfg, scan=with_positions(scan.as_scan(), positions,
                                                 scan.pixel_size_m)) as recon:
        recon.run()
        refined = recon.refined_positions()
        est = recon.positions if refined is None else refined
        obj = recon.object
    true = scan.positions_px
    return PositionRun(positions=np.asarray(est, np.float64),
                       position_rms_px=rms_error(est, true),
                       object_error=registered_object_error(obj, est, scan.object, true,
                                                            scan.probe, grid=0.5),
                       seconds=time.perf_counter() - start)
