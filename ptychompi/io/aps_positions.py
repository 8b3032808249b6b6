"""Scan positions of the APS layout (``positions_m[j] = (row, col)`` in metres, PTYCHOPY.md
section 2.2):

* ``raster``: ``((i - (R-1)/2) step_r, (j - (C-1)/2) step_c)`` for row i, column j of the
  ``scan_dims = [R, C]`` grid, frame order row-major (k = i C + j);
* ``spiral``: ``row = sqrt(k) cos(4 sqrt(k)) step_r``, ``col = sqrt(k) sin(4 sqrt(k)) step_c``;
* ``file``: a CSV of ``row,col`` pairs in metres, one per line (ptychopy ``-lf``);
* ``mda``: the slow (outer, row) and fast (inner, column) positioners of an EPICS MDA file,
  converted from their unit (m, mm, um, nm) to metres;
* ``auto``: file if ``position_file`` is set, else mda if ``mda_file``, else raster if
  ``scan_dims`` and ``step_m``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..data.scan import ScanGeometry
from ..errors import ConfigError, DataError
from ..model.geometry import HC_KEV_M, length_scale
from . import mda as mda_module

# --------------------------------------------------------------------------- positions


def raster_positions(scan_dims: Sequence[int], step_m: Sequence[float] | float, *,
                     mirror_rows: bool = False, mirror_cols: bool = False, swap: bool = False,
                     drift_m: Sequence[float] = (0.0, 0.0), jitter_px: float = 0.0,
                     pixel_m: float | None = None, seed: int = 0) -> np.ndarray:
    """Raster grid positions (N, 2) [m], row-major, as ptychopy's ``CartesianScanMesh``.

    Row i, column j sits at ``((i - (R-1)/2) step_r, (j - (C-1)/2) step_c)``; ``mirror_rows`` /
    ``mirror_cols`` reverse an axis (``mirror1stScanAxis`` / ``mirror2ndScanAxis``);
    ``drift_m = (a, b)`` adds ``(i a, j b)`` (``-drift``); ``jitter_px`` adds a uniform
    ``[-r, r]`` pixel offset per axis (``-jitterRadius``, needs ``pixel_m``, seeded so every
    rank agrees); ``swap`` exchanges row and column last (``flipScanAxis``).
    """
    rows, cols = (int(v) for v in scan_dims)
    if rows < 1 or cols < 1:
        raise ConfigError(f"data.scan_dims = {list(scan_dims)}: expected [rows, cols] >= 1")
    step_r, step_c = _pair(step_m, "data.step_m")
    i = np.arange(rows, dtype=np.float64)
    j = np.arange(cols, dtype=np.float64)
    r = ((rows - 1) / 2 - i) if mirror_rows else (i - (rows - 1) / 2)
    c = ((cols - 1) / 2 - j) if mirror_cols else (j - (cols - 1) / 2)
    r = r * step_r + i * float(drift_m[0])
    c = c * step_c + j * float(drift_m[1])
    pos = np.stack(np.broadcast_arrays(r[:, None], c[None, :]), axis=-1).reshape(-1, 2)
    if jitter_px:
        if pixel_m is None or pixel_m <= 0:
            raise ConfigError("a position jitter in pixels needs the object pixel size (pixel_m)")
        rng = np.random.default_rng(seed)
        pos = pos + rng.uniform(-jitter_px, jitter_px, size=pos.shape) * pixel_m
    if swap:
        pos = pos[:, ::-1]
    return np.ascontiguousarray(pos)


def spiral_positions(n: int, step_m: Sequence[float] | float) -> np.ndarray:
    """Spiral positions (n, 2) [m] as ptychopy: r = sqrt(k), theta = 4 sqrt(k).

    ``row = sqrt(k) cos(4 sqrt(k)) step_r``, ``col = sqrt(k) sin(4 sqrt(k)) step_c``.
    """
    step_r, step_c = _pair(step_m, "data.step_m")
    s = np.sqrt(np.arange(int(n), dtype=np.float64))
    return np.stack([s * np.cos(4 * s) * step_r, s * np.sin(4 * s) * step_c], axis=1)


def _pair(value: Sequence[float] | float, key: str) -> tuple[float, float]:
    if np.ndim(value) == 0:
        v = float(value)  # type: ignore[arg-type]
        return v, v
    vals = [float(v) for v in value]  # type: ignore[union-attr]
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) != 2:
        raise ConfigError(f"{key} = {vals}: expected [row, col]")
    return vals[0], vals[1]


def read_position_file(path: str | Path, n: int) -> np.ndarray:
    """The first ``n`` positions (n, 2) [m] of a CSV file, one ``row,col`` pair a line.

    Blank lines and lines starting with ``#`` are skipped; extra lines are ignored.
    """
    path = str(path)
    pos = np.empty((n, 2), np.float64)
    count = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if count == n:
                    break
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                parts = [p for p in re.split(r"[,\s;]+", text) if p]
                try:
                    if len(parts) != 2:
                        raise ValueError
                    pos[count] = float(parts[0]), float(parts[1])
                except ValueError:
                    raise DataError(f"{path}, line {lineno}: expected 'row,col' in metres, "
                                    f"got {text[:60]!r}") from None
                count += 1
    except FileNotFoundError:
        raise DataError(f"position file {path} not found; check data.position_file") from None
    except OSError as exc:
        raise DataError(f"position file {path}: cannot read it ({exc.strerror})") from None
    if count < n:
        raise DataError(f"position file {path} has {count} positions but the scan has {n} "
                        "frames; give one 'row,col' line per frame")
    return pos


def mda_positions(path: str | Path, pv_map: dict | None = None) -> tuple[np.ndarray, dict]:
    """Positions (N, 2) [m] from an MDA file and the scan parameters it holds.

    Row = the slow (outer) positioner, column = the fast (inner) one, frame order row-major.
    Each axis is converted by its unit (m, mm, um, nm); an axis without a unit takes the other
    axis' unit (2-ID-E fly scans record "mm" on the slow axis only).
    """
    params = mda_module.scan_parameters(mda_module.read_mda(str(path)), pv_map)
    fast = params.get("fast_positions")
    slow = params.get("slow_positions")
    if fast is None:
        raise DataError(f"{path}: the MDA file has no fast-axis positioner; "
                        "use data.positions: file or raster")
    fast = np.asarray(fast, np.float64)
    fast_unit = params.get("fast_unit") or params.get("slow_unit")
    slow_unit = params.get("slow_unit") or params.get("fast_unit")
    kf = length_scale(fast_unit)
    if kf is None:
        raise DataError(f"{path}: fast positioner {params.get('fast_name')} has unit "
                        f"{fast_unit!r}, expected m, mm, um or nm; "
                        "use data.positions: file instead")
    if fast.ndim == 1:
        fast = fast[None, :]
    if slow is None:
        slow_m = np.zeros(fast.shape[0])
    else:
        ks = length_scale(slow_unit)
        if ks is None:
            raise DataError(f"{path}: slow positioner {params.get('slow_name')} has unit "
                            f"{slow_unit!r}, expected m, mm, um or nm")
        slow_m = np.asarray(slow, np.float64).reshape(-1)[: fast.shape[0]] * ks
    rows = np.broadcast_to(slow_m[:, None], fast.shape)
    pos = np.stack([rows, fast * kf], axis=-1).reshape(-1, 2)
    pos = pos[np.isfinite(pos).all(axis=1)]  # NaN padding of short rows
    return np.ascontiguousarray(pos), params


def _positions(cfg: DataConfig, n: int, geometry: ScanGeometry) -> tuple[np.ndarray, str, dict]:
    """Positions for n frames per ``cfg.positions``: (positions, mode used, extra metadata)."""
    mode = cfg.positions
    if mode == "auto":
        if cfg.position_file:
            mode = "file"
        elif cfg.mda_file:
            mode = "mda"
        elif cfg.scan_dims and cfg.step_m:
            mode = "raster"
        else:
            raise DataError("APS data needs positions: set data.position_file (CSV, metres), "
                            "data.mda_file, or data.scan_dims and data.step_m for a raster")
    meta: dict = {}
    if mode == "file":
        if not cfg.position_file:
            raise ConfigError("data.positions = file needs data.position_file")
        return read_position_file(cfg.position_file, n), mode, meta
    if mode == "mda":
        if not cfg.mda_file:
            raise ConfigError("data.positions = mda needs data.mda_file")
        pos, params = mda_positions(cfg.mda_file, cfg.mda_pv_map)
        energy = params.get("energy_kev")
        if energy:
            meta["energy_kev"] = float(energy)
            if geometry.wavelength_m is None:
                geometry.wavelength_m = HC_KEV_M / float(energy)
        meta["mda_scan_dims"] = tuple(params.get("scan_dims") or ())
        if len(pos) < n:
            raise DataError(f"{cfg.mda_file}: the MDA file has {len(pos)} positions but the "
                            f"scan has {n} frames; set data.n_frames or use a position file")
        return pos[:n], mode, meta
    if mode == "raster":
        if not cfg.scan_dims or not cfg.step_m:
            raise ConfigError("data.positions = raster needs data.scan_dims [rows, cols] and "
                              "data.step_m [row, col] in metres")
        pos = raster_positions(cfg.scan_dims, cfg.step_m)
        if len(pos) < n:
            raise DataError(f"data.scan_dims = {cfg.scan_dims} gives {len(pos)} positions but "
                            f"the scan has {n} frames; fix data.scan_dims or data.n_frames")
        return pos[:n], mode, meta
    if mode == "spiral":
        if not cfg.step_m:
            raise ConfigError("data.positions = spiral needs data.step_m [row, col] in metres")
        return spiral_positions(n, cfg.step_m), mode, meta
    raise ConfigError(f"data.positions = {mode!r} is not one of auto, file, raster, spiral, mda")
