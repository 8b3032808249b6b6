"""ptychopy's output files (object and probe CSV or binary, ptychompi's result file) and the
whole-mode iteration loop (``-T``, ``-save``)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from ...app.api import Reconstruction, agree
from ...app.provenance import run_settings
from ...errors import PtychompiError
from ...io.export import write_ptychopy_csv
from ...io.results import ResultData, write_result
from .params import _DISPLAY, OUTPUT_DIR, PtychopyOptions

log = logging.getLogger("ptychompi.compat.ptychopy")


# ----------------------------------------------------------------------------- outputs
def _stacked(probe: np.ndarray) -> np.ndarray:
    probe = np.asarray(probe)
    return probe.reshape(-1, probe.shape[-1])


def write_outputs(recon: Reconstruction, opts: PtychopyOptions, index: int = 0, *,
                  final: bool = True, directory: str | os.PathLike = OUTPUT_DIR) -> list[str]:
    """ptychopy's files ``<directory>/<jobID>_{object,probes}_<index>.csv|.bin`` (collective).

    Rank 0 writes; with ``final`` also ``<jobID>_result.h5``. Returns the paths (rank 0).
    """
    obj = recon.object  # collective
    probe = _stacked(recon.probe)
    written: list[str] = []
    error: BaseException | None = None
    if recon.rank == 0:
        try:
            written = _write_files(recon, opts, obj, probe, index, final, Path(directory))
        except Exception as exc:  # noqa: BLE001 - any failure is reported on every rank below
            error = exc
    agree(recon.comm, error)
    return written


def _write_files(recon: Reconstruction, opts: PtychopyOptions, obj: np.ndarray,
                 probe: np.ndarray, index: int, final: bool, out: Path) -> list[str]:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PtychompiError(f"cannot create the output folder {str(out)!r} "
                             f"({exc.strerror or exc}); run from a writable folder") from None
    ext = ".bin" if opts.binary_output else ".csv"
    if final:
        log.info("Writing final reconstruction (%d,%d) to disk...", *obj.shape)
    paths = []
    for name, arr in (("object", obj), ("probes", probe)):
        path = out / f"{opts.job_id}_{name}_{index}{ext}"
        if opts.binary_output:
            np.ascontiguousarray(arr, dtype=np.complex64).tofile(path)
        else:
            write_ptychopy_csv(path, arr)
        paths.append(str(path))
    if final:
        paths.append(_write_result(recon, opts, obj, out / f"{opts.job_id}_result.h5"))
    return paths


def _write_result(recon: Reconstruction, opts: PtychopyOptions, obj: np.ndarray,
                  path: Path) -> str:
    try:
        ver = version("ptychompi")
    except PackageNotFoundError:
        ver = "unknown"
    metrics = recon.metrics
    prov = {"version": ver, "ranks": recon.size, "algorithm": recon.config.algorithm.name,
            "iterations_done": int(metrics["iterations"]),
            "wall_time_s": float(time.perf_counter() - recon.started),
            "interface": "ptychopy", "ptychopy_command": opts.cmdstr, "job_id": opts.job_id,
            **run_settings(recon)}
    write_result(path, ResultData(object=obj, probe=recon.probe, positions=recon.positions,
                                  error=np.asarray(metrics["error"], np.float64),
                                  pixel_size=float(recon.layout.pixel_size_m),
                                  config_yaml=recon.config.to_yaml(), provenance=prov))
    return str(path)


def _log_iteration(recon: Reconstruction, metrics: dict) -> None:
    if recon.rank == 0:
        name = _DISPLAY.get(recon.config.algorithm.name, recon.config.algorithm.name)
        log.info("%s Iteration [%05d] --- step time= %f", name, metrics["iteration"],
                 metrics.get("seconds", 0.0))
        log.info("%s Iteration [%05d] --- RMS= %e", name, metrics["iteration"],
                 metrics["error"])


def run_whole(recon: Reconstruction, opts: PtychopyOptions,
              callback: Callable[[dict], None] | None = None) -> dict:
    """Whole mode as ptychopy: ``-i`` iterations, ``-T`` time limit, ``-save`` files."""
    limit = opts.time_limit_s
    save = opts.save_every
    t0 = time.perf_counter()
    while recon.iteration < recon.config.algorithm.iterations:
        metrics = recon.step()
        _log_iteration(recon, metrics)
        if callback is not None:
            callback(metrics)
        if save > 0 and recon.iteration % save == 0:
            write_outputs(recon, opts, recon.iteration // save, final=False)
        if limit > 0:
            stop = time.perf_counter() - t0 > limit
            if recon.comm is not None and recon.size > 1:
                stop = recon.comm.bcast(stop, root=0)  # rank 0's clock decides for all
            if stop:
                log.info("time limit -T=%g s reached after %d iterations", limit,
                         recon.iteration)
                break
    return recon.metrics
