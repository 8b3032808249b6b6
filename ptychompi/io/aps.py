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

Positions: :mod:`ptychompi.io.aps_positions`; file patterns: :mod:`ptychompi.io.aps_patterns`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..config import DataConfig
from ..data.scan import ScanGeometry, ScanSource
from ..errors import ConfigError, DataError
from .aps_patterns import (
    _count_conversions,
    _file_for,
    _list_indices,
    resolve_pattern,
)
from .aps_positions import (
    _positions,
    mda_positions,
    raster_positions,
    read_position_file,
    spiral_positions,
)

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

_FILTER_NAMES = {1: "zlib", 32004: "lz4", 32008: "bitshuffle", 32001: "blosc", 32015: "zstd"}


def _load_plugins() -> None:
    """Register the HDF5 compression filters (LZ4, bitshuffle, ...) with h5py."""
    from .filters import load  # noqa: PLC0415

    load()


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
