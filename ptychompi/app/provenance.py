"""What a result depends on: versions of the libraries and the settings a run used.

:func:`provenance` builds the ``provenance/`` group of a result file (``io/results.py``): the
run's shape (ranks, grid, devices, timings, bytes exchanged) and everything that changes the
numbers bit for bit: FFT library, threads per rank, whether the fused CPU path ran, precision,
and the versions of numpy, scipy, numba, pyFFTW, h5py, mpi4py, the MPI library and CuPy.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from importlib import metadata, util
from typing import Any

import numpy as np

#: distribution names whose versions a result records (import name: distribution)
LIBRARIES = {"numpy": "numpy", "scipy": "scipy", "numba": "numba", "pyfftw": "pyFFTW",
             "h5py": "h5py", "mpi4py": "mpi4py"}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cupy_version() -> str | None:
    """CuPy's version where CuPy is installed (imported only if it already is)."""
    module = sys.modules.get("cupy")
    if module is not None:
        return str(getattr(module, "__version__", "unknown"))
    if util.find_spec("cupy") is None:
        return None
    for dist in metadata.packages_distributions().get("cupy", []):
        found = _version(dist)
        if found:
            return found
    return "unknown"


def mpi_library() -> str | None:
    """The first line of ``MPI.Get_library_version()``; ``None`` where this process has not
    loaded MPI (a run without a communicator does not initialise MPI just to ask)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None:
        return None
    try:
        return mpi.Get_library_version().strip().splitlines()[0].strip()
    except Exception:  # noqa: BLE001 - an MPI that cannot say is recorded as unknown
        return "unknown"


def library_versions() -> dict[str, str | None]:
    """Python, the numerical libraries, the MPI library and CuPy (``None``: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    out.update({name: _version(dist) for name, dist in LIBRARIES.items()})
    out["mpi_library"] = mpi_library()
    out["cupy"] = _cupy_version()
    return out


def fft_library(backend: Any) -> str:
    """The FFT library the backend's transforms use: ``cufft`` on a GPU, else ``fftw`` or
    ``scipy`` (pocketfft)."""
    return "cufft" if backend.is_gpu else str(backend.fft)


def run_settings(recon: Any) -> dict:
    """The settings every rank shares that change a result's numbers (no communication);
    ``halo``: how LSQML's halo sums travelled (``parallel.halo`` with ``auto`` resolved)."""
    schedule = getattr(getattr(recon, "engine", None), "schedule", None)
    return {"fft": fft_library(recon.backend), "precision": recon.config.algorithm.precision,
            "operations": recon.backend.ops_kind,
            "halo": None if schedule is None else schedule.halo, "versions": library_versions()}


def provenance(recon: Any) -> dict:
    """The provenance of a :class:`~ptychompi.app.api.Reconstruction`. Collective: per-rank
    values (timings, devices, threads, fused path) are gathered to every rank."""
    from .. import __version__  # noqa: PLC0415

    m = recon.metrics
    be = recon.backend
    local = {"compute_s": m["compute_s"], "comm_s": m["comm_s"], "io_s": m["io_s"],
             "bytes_sent": m["bytes_sent"], "positions_held": len(recon.tile.indices),
             "local_object_pixels": int(np.prod(recon.tile.box.shape)),
             "device": be.name if be.device_id is None else f"gpu{be.device_id}",
             "workers": int(be.threads),
             "fused": bool(getattr(recon.engine, "fused", False))}
    rows = [local] if recon.comm is None else recon.comm.allgather(local)
    grid = list(recon.tile.grid) if getattr(recon.tile, "grid", None) else [1, 1]
    cfg = recon.config
    prov = {"version": __version__, "ranks": recon.size, "grid": grid,
            "algorithm": cfg.algorithm.name, "iterations_done": recon.iteration,
            # the engine's own section (algorithm.<name>): its tuning constants included
            "engine_options": dataclasses.asdict(getattr(cfg.algorithm, cfg.algorithm.name)),
            "wall_time_s": time.perf_counter() - recon.started,
            "devices": [r["device"] for r in rows], **run_settings(recon)}
    for key in ("compute_s", "comm_s", "io_s", "bytes_sent", "positions_held",
                "local_object_pixels", "workers", "fused"):
        prov[key] = [r[key] for r in rows]
    return prov
