"""The APS file layout: a scan stored as numbered HDF5 files, one per scan row (typically).

``data.path`` is a printf pattern (``scan152_data_%06d.h5``; ptychopy's ``scan152_data_#06d.h5``,
where the first ``#`` of the file name means ``%``) or the first row file itself
(``scan152_data_000001.h5``: the last group of digits before the extension becomes the index,
and that number is the first index). Frame k lives in file
``pattern % (k // frames_per_file + first_index)`` at position ``k % frames_per_file``
(ptychopy's ``Diffractions::load``). The dataset
(``/entry/data/data`` by default) is 2-D (one frame per file) or 3-D ``(n, rows, cols)``,
plain or compressed with LZ4, bitshuffle or zlib (``hdf5plugin`` is imported before reading).

Opening is lazy: it lists the directory, reads the shape of the first file (and of the last
one when the frame count comes from the files) and builds the positions. :meth:`APSScan.read`
opens only the files that hold the requested frames and reads contiguous slices.

Positions (``positions_m[j] = (row, col)`` in metres, PTYCHOPY.md section 2.2):

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

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..geometry import HC_KEV_M, length_scale
from ..scan import ScanGeometry, ScanSource
from . import mda as mda_module

__all__ = [
    "APSScan",
    "open_aps",
    "write_aps",
    "resolve_pattern",
    "raster_positions",
    "spiral_positions",
    "read_position_file",
    "mda_positions",
]

_CONVERSION = re.compile(r"%(?P<flags>[-+ #0]*)(?P<width>\d*)[diu]")
_FILTER_NAMES = {1: "zlib", 32004: "lz4", 32008: "bitshuffle", 32001: "blosc", 32015: "zstd"}


def _load_plugins() -> None:
    """Register the HDF5 compression filters (LZ4, bitshuffle, ...) with h5py."""
    from .filters import load  # noqa: PLC0415

    load()


# --------------------------------------------------------------------------- file patterns


def _count_conversions(name: str) -> list[re.Match]:
    """The %d-style conversions of a file name (``%%`` is a literal percent sign)."""
    return list(_CONVERSION.finditer(name.replace("%%", "\0\0")))


def resolve_pattern(path: str, first_index: int = 1) -> tuple[str, int]:
    """``(printf pattern, first index)`` for ``data.path``.

    A name with ``%d``-style conversion (or ptychopy's ``#`` form) is a pattern and keeps
    ``first_index``. An existing file name without one is the first row file: the last group of
    digits before the extension becomes ``%0Nd`` and its number the first index; a name without
    digits is a single file holding the whole scan.
    """
    directory, name = os.path.split(str(path))
    if "%" not in name and "#" in name:
        name = name.replace("#", "%", 1)  # ptychopy: the first '#' means '%'
    convs = _count_conversions(name)
    if len(convs) > 1:
        raise DataError(f"{path}: the file pattern has {len(convs)} %d conversions; use one")
    if convs:
        return os.path.join(directory, name), first_index
    if not os.path.isfile(path):
        raise DataError(f"{path}: not found; give the first row file or its printf pattern "
                        "(e.g. scan152_data_%06d.h5) as data.path")
    stem = os.path.splitext(name)[0]  # digits in the extension (.h5) are not the index
    digits = list(re.finditer(r"\d+", stem))
    if not digits:
        return os.path.join(directory, name.replace("%", "%%")), first_index
    last = digits[-1]
    number = int(last.group())
    if first_index not in (1, number):
        raise DataError(f"{path}: the file name has index {number} but data.first_index = "
                        f"{first_index}; give a printf pattern or drop data.first_index")
    pattern = (name[: last.start()].replace("%", "%%") + f"%0{len(last.group())}d"
               + name[last.end():].replace("%", "%%"))
    return os.path.join(directory, pattern), number


def _has_index(pattern: str) -> bool:
    return bool(_count_conversions(os.path.basename(pattern)))


def _list_indices(pattern: str, first_index: int) -> list[int]:
    """Indices >= ``first_index`` of the files of ``pattern`` present on disk (sorted)."""
    directory, name = os.path.split(pattern)
    if not _has_index(pattern):
        return [first_index] if os.path.isfile(_file_for(pattern, first_index)) else []
    m = _count_conversions(name)[0]
    head = name[: m.start()].replace("%%", "%")
    tail = name[m.end():].replace("%%", "%")
    regex = re.compile(re.escape(head) + r"\s*(\d+)" + re.escape(tail))
    try:
        entries = os.listdir(directory or ".")
    except OSError as exc:
        raise DataError(f"{directory}: cannot list the scan directory ({exc.strerror})") from None
    found = []
    for entry in entries:
        hit = regex.fullmatch(entry)
        if hit is None:
            continue
        idx = int(hit.group(1))
        if idx >= first_index and name % idx == entry:
            found.append(idx)
    return sorted(found)


def _file_for(pattern: str, index: int) -> str:
    """The file name of row file ``index`` (``pattern``'s directory is taken literally)."""
    directory, name = os.path.split(pattern)
    return os.path.join(directory, name % index if _has_index(pattern) else name % ())


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


# --------------------------------------------------------------------------- reader


def _dataset(f: h5py.File, name: str, path: str) -> h5py.Dataset:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: no dataset {name!r}; set data.dataset to the frames' path")
    if obj.ndim not in (2, 3):
        raise DataError(f"{path}: dataset {name} has rank {obj.ndim} (shape {obj.shape}); "
                        "expected 2-D (one frame) or 3-D (frames, rows, cols)")
    return obj


def _compression(ds: h5py.Dataset) -> str:
    plist = ds.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        fid = plist.get_filter(i)[0]
        if fid in (2,):  # shuffle is a pre-filter of zlib, not a codec
            continue
        names.append(_FILTER_NAMES.get(fid, f"filter-{fid}"))
    return "+".join(names) if names else "none"


@dataclass
class APSScan(ScanSource):
    """A scan in the APS layout; frames are read file by file on demand."""

    pattern: str = ""
    first_index: int = 1
    frames_per_file: int = 1
    dataset: str = "/entry/data/data"
    n_files: int = 0

    def file_of(self, k: int) -> str:
        """The path of the file holding frame ``k``."""
        return _file_for(self.pattern, k // self.frames_per_file + self.first_index)

    def _read_sorted(self, indices: np.ndarray) -> np.ndarray:
        _load_plugins()
        out = np.empty((len(indices), *self.frame_shape), np.float32)
        fpf = self.frames_per_file
        files = indices // fpf
        # boundaries of the groups of indices that live in the same file
        cuts = np.flatnonzero(np.diff(files)) + 1
        starts = np.concatenate([[0], cuts])
        stops = np.concatenate([cuts, [len(indices)]])
        for a, b in zip(starts, stops, strict=True):
            self._read_file(int(files[a]), indices[a:b], out, int(a))
        return out

    def _read_file(self, file_no: int, idx: np.ndarray, out: np.ndarray, at: int) -> None:
        path = _file_for(self.pattern, file_no + self.first_index)
        local = idx - file_no * self.frames_per_file
        try:
            f = h5py.File(path, "r")
        except FileNotFoundError:
            raise DataError(f"{path}: row file not found (holds frames "
                            f"{int(idx[0])}..{int(idx[-1])}); check data.path") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot open as HDF5 ({exc})") from None
        with f:
            ds = _dataset(f, self.dataset, path)
            shape = tuple(ds.shape[-2:])
            if shape != tuple(self.frame_shape):
                raise DataError(f"{path}: frames are {shape[0]}x{shape[1]}, the scan's first "
                                f"file has {self.frame_shape[0]}x{self.frame_shape[1]}")
            held = 1 if ds.ndim == 2 else ds.shape[0]
            if int(local[-1]) >= held:
                raise DataError(f"{path}: holds {held} frames but frame {int(local[-1])} of "
                                f"this file (scan frame {int(idx[-1])}) is needed; "
                                "check data.frames_per_file and data.n_frames")
            try:
                if ds.ndim == 2:
                    out[at] = ds[()]
                    return
                # contiguous runs -> one slice read each
                breaks = np.flatnonzero(np.diff(local) != 1) + 1
                for run in np.split(np.arange(len(local)), breaks):
                    lo, hi = int(local[run[0]]), int(local[run[-1]]) + 1
                    out[at + run[0]: at + run[-1] + 1] = ds[lo:hi]
            except OSError as exc:
                raise DataError(f"{path}: cannot read {self.dataset} ({exc}); a compression "
                                "filter may be missing (pip install hdf5plugin)") from None


def open_aps(data_cfg: DataConfig, geometry: ScanGeometry | None = None) -> APSScan:
    """Open an APS-layout scan lazily: shapes, file count and positions only."""
    if not data_cfg.path:
        raise ConfigError("data.path is not set; give the first APS row file or its pattern")
    _load_plugins()
    pattern, first = resolve_pattern(str(data_cfg.path), data_cfg.first_index)
    present = _list_indices(pattern, first)
    if not present:
        raise DataError(f"{pattern}: no files match this pattern from index {first}; "
                        "check data.path and data.first_index")
    n_files = present[-1] - first + 1
    probe_path = _file_for(pattern, present[0])
    try:
        with h5py.File(probe_path, "r") as f:
            ds = _dataset(f, data_cfg.dataset, probe_path)
            frame_shape = (int(ds.shape[-2]), int(ds.shape[-1]))
            held = 1 if ds.ndim == 2 else int(ds.shape[0])
            dtype = ds.dtype
            compression = _compression(ds)
    except OSError as exc:
        raise DataError(f"{probe_path}: cannot open as HDF5 ({exc})") from None
    fpf = data_cfg.frames_per_file or held
    if held < fpf and present[0] != present[-1]:
        raise DataError(f"{probe_path}: holds {held} frames but data.frames_per_file = {fpf}")
    if data_cfg.n_frames is not None:
        n = int(data_cfg.n_frames)
    elif data_cfg.scan_dims:
        n = int(math.prod(data_cfg.scan_dims))
    else:
        last = _file_for(pattern, present[-1])
        last_held = held
        if present[-1] != present[0]:
            try:
                with h5py.File(last, "r") as f:
                    ds = _dataset(f, data_cfg.dataset, last)
                    last_held = 1 if ds.ndim == 2 else int(ds.shape[0])
            except OSError as exc:
                raise DataError(f"{last}: cannot open as HDF5 ({exc})") from None
        n = (n_files - 1) * fpf + min(last_held, fpf)
    geometry = geometry if geometry is not None else ScanGeometry()
    positions, mode, meta = _positions(data_cfg, n, geometry)
    scan = APSScan(path=pattern, n_frames=n, frame_shape=frame_shape, dtype=np.dtype(dtype),
                   positions_m=positions, geometry=geometry, compression=compression,
                   metadata={"layout": "aps", "positions": mode, "files_found": len(present),
                             **meta},
                   pattern=pattern, first_index=first, frames_per_file=fpf,
                   dataset=data_cfg.dataset, n_files=n_files)
    scan.validate()
    return scan


# --------------------------------------------------------------------------- writer


def write_aps(directory: str | Path, pattern: str, frames: np.ndarray, *, frames_per_file: int,
              first_index: int = 1, dataset: str = "/entry/data/data",
              compression: str = "none", ndim: int = 3) -> list[str]:
    """Write ``frames`` (N, H, W) as APS row files; returns the paths written.

    ``compression``: ``none``, ``lz4``, ``bitshuffle`` (with LZ4) or ``zlib`` (gzip).
    ``ndim=2`` writes one 2-D frame per file (needs ``frames_per_file=1``). The last file
    holds the remaining frames when N is not a multiple of ``frames_per_file``.
    """
    from . import filters  # noqa: PLC0415

    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (N, H, W), got shape {frames.shape}")
    if ndim not in (2, 3) or (ndim == 2 and frames_per_file != 1):
        raise ValueError("ndim=2 writes one frame per file: use frames_per_file=1")
    options: dict = {
        "none": lambda: {},
        "lz4": lambda: filters.lz4(str(directory)),
        "bitshuffle": lambda: filters.bitshuffle_lz4(str(directory)),
        "zlib": lambda: {"compression": "gzip", "compression_opts": 4},
    }
    if compression not in options:
        raise ValueError(f"compression {compression!r} is not one of {', '.join(options)}")
    comp = options[compression]()
    name = pattern.replace("#", "%", 1) if "%" not in pattern else pattern
    if len(_count_conversions(name)) != 1:
        raise ValueError(f"pattern {pattern!r} needs one %d-style conversion")
    os.makedirs(directory, exist_ok=True)
    paths = []
    for file_no, lo in enumerate(range(0, len(frames), frames_per_file)):
        block = frames[lo: lo + frames_per_file]
        path = os.path.join(str(directory), name % (file_no + first_index))
        data = block[0] if ndim == 2 else block
        chunks = data.shape if ndim == 2 else (1, *data.shape[1:])
        opts = dict(comp)
        if compression != "none":
            opts["chunks"] = chunks
        with h5py.File(path, "w") as f:
            f.create_dataset(dataset, data=data, **opts)
        paths.append(path)
    return paths
