"""Reconstruct a simulated scan with default settings and score it against its truth."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..app.api import Reconstruction
from ..model.metrics import registered_object_error
from .matrix import MatrixScan


def default_config(engine: str, iterations: int, **algorithm: Any) -> dict:
    """What a new user runs: the engine, the iterations, nothing else (CPU)."""
    return {"algorithm": {"name": engine, "iterations": iterations, **algorithm},
            "parallel": {"device": "cpu"}}


def evaluate(scan: MatrixScan, engine: str, iterations: int, comm: Any | None = None,
             parallel: dict | None = None, **algorithm: Any) -> dict:
    """Run ``engine`` on ``scan`` and return the object error (registered to a fraction of a
    pixel, global factor and phase ramp removed, over the region lit at ≥ 10 %), the Fourier
    errors and whether every value stayed finite. A run the engine stops as diverged scores
    ``inf``. Registration: blind ptychography may move object and probe together by a
    fraction of a pixel, which is no error of the reconstruction."""
    cfg = default_config(engine, iterations, **algorithm)
    if parallel:
        cfg["parallel"].update(parallel)
    t0 = time.perf_counter()
    recon = Reconstruction(cfg, comm=comm, scan=scan.as_scan())
    diverged = None
    try:
        recon.run()
    except Exception as exc:  # noqa: BLE001 - a divergence is a result here
        diverged = str(exc)
    errors = list(recon.metrics["error"])
    obj, probe = recon.object, recon.probe
    positions = recon.positions
    recon.close()
    out = {"case": scan.case.name, "engine": engine, "iterations": len(errors),
           "fourier_error": errors[-1] if errors else math.nan,
           "fourier_drop": errors[0] / errors[-1] if errors and errors[-1] > 0 else math.nan,
           "seconds": time.perf_counter() - t0, "diverged": diverged}
    if obj is None:  # not rank 0
        return out
    finite = (diverged is None and bool(np.all(np.isfinite(obj)))
              and bool(np.all(np.isfinite(probe))) and all(map(math.isfinite, errors)))
    out["finite"] = finite
    out["object_error"] = (registered_object_error(obj, positions, scan.object,
                                                   scan.positions_px, scan.probe)
                           if finite else math.inf)
    return out
