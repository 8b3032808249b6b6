"""The result / checkpoint file: one HDF5 file per reconstruction, written atomically.

Layout (all at the root unless noted)::

    object       (H, W) complex     the reconstructed object
    probe        (K, M, M) complex  the probe modes
    positions    (N, 2) float64     (row, col) top-left corners in object pixels
    refined_positions (N, 2) float64  with position refinement: the refined positions
    position_transform (3, 2) float64  with the affine fit: refined ≈ [positions, 1] @ T
    error        (iterations,) float64
    pixel_size   () float64         object pixel size in metres
    config       () str             the full configuration as YAML
    provenance/  scalars (version, ranks, algorithm, iterations_done, wall_time_s, ...) as
                 attributes; lists (grid, devices, per-rank compute_s, comm_s, bytes_sent,
                 positions_held, local_object_pixels) as datasets; nested dicts as subgroups
    state/       checkpoints only: engine state, named arrays as given, dicts as subgroups

Root attributes ``format = "ptychompi-result"`` and ``format_version`` identify the file.
Writing goes to ``<path>.tmp-<pid>`` in the same folder, which is flushed, fsynced and then
renamed over ``path``, so a crash leaves either the old file or the new one, never a torn one.
Only one process (rank 0) may write a given path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..app.monitor import format_bytes
from ..errors import DataError, PtychompiError
from .atomic import atomic_h5

__all__ = ["ResultData", "write_result", "read_result", "check_output_dir",
           "estimate_result_bytes", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "ptychompi-result"
FORMAT_VERSION = 1
_ROOT = ("object", "probe", "positions", "error", "pixel_size")


@dataclass
class ResultData:
    """Everything a result or checkpoint file holds."""

    object: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    error: np.ndarray
    pixel_size: float
    config_yaml: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None
    refined_positions: np.ndarray | None = None  # position refinement: (N, 2) as positions
    position_transform: np.ndarray | None = None  # its last affine fit (3, 2)


# ----------------------------------------------------------------------------- writing
def _write_attr_or_dataset(group: h5py.Group, key: str, value: Any) -> None:
    """Scalars become attributes; sequences become datasets; mappings become subgroups."""
    if isinstance(value, Mapping):
        sub = group.create_group(key)
        for k, v in value.items():
            _write_attr_or_dataset(sub, str(k), v)
    elif value is None:
        group.attrs[key] = h5py.Empty("f8")
    elif isinstance(value, (str, bytes, bool, int, float, np.generic)):
        group.attrs[key] = value
    else:
        seq = list(value) if not isinstance(value, np.ndarray) else value
        if not isinstance(seq, np.ndarray) and seq and all(isinstance(v, str) for v in seq):
            group.create_dataset(key, data=np.array(seq, dtype=h5py.string_dtype()))
        else:
            arr = np.asarray(seq)
            if arr.dtype == object:
                raise TypeError(f"provenance {key!r}: cannot store {type(value).__name__} "
                                "with mixed element types")
            if arr.size == 0:
                arr = arr.astype(np.float64)
            group.create_dataset(key, data=arr)
            group[key].attrs["_list"] = not isinstance(value, np.ndarray)


def _write_state(group: h5py.Group, state: Mapping[str, Any]) -> None:
    for key, value in state.items():
        name = str(key)
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"state name {name!r}: names must be non-empty without '/'")
        if isinstance(value, Mapping):
            _write_state(group.create_group(name), value)
            continue
        if isinstance(value, str):
            group.create_dataset(name, data=value, dtype=h5py.string_dtype())
            continue
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"state {name!r}: {type(value).__name__} is not a numeric array; "
                            "convert it to a numpy array (large ints: split into uint64 words)")
        group.create_dataset(name, data=arr)


def write_result(path: str | os.PathLike, data: ResultData) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    with atomic_h5(path) as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.create_dataset("object", data=np.asarray(data.object))
        f.create_dataset("probe", data=np.asarray(data.probe))
        pos = f.create_dataset("positions", data=np.asarray(data.positions, np.float64))
        pos.attrs["units"] = "object pixels"
        pos.attrs["convention"] = "(row, col) of each frame's top-left corner"
        if data.refined_positions is not None:
            ref = f.create_dataset("refined_positions",
                                   data=np.asarray(data.refined_positions, np.float64))
            ref.attrs["units"] = "object pixels"
            ref.attrs["convention"] = "positions after position refinement"
        if data.position_transform is not None:
            tr = f.create_dataset("position_transform",
                                  data=np.asarray(data.position_transform, np.float64))
            tr.attrs["convention"] = ("refined_positions ≈ [positions, 1] @ T (rows: row and "
                                      "col coefficients, then the offset, object pixels)")
        f.create_dataset("error", data=np.asarray(data.error, np.float64).reshape(-1))
        px = f.create_dataset("pixel_size", data=np.float64(data.pixel_size))
        px.attrs["units"] = "m"
        f.create_dataset("config", data=data.config_yaml or "", dtype=h5py.string_dtype())
        prov = f.create_group("provenance")
        for key, value in (data.provenance or {}).items():
            _write_attr_or_dataset(prov, str(key), value)
        if data.state:
            _write_state(f.create_group("state"), data.state)


# ----------------------------------------------------------------------------- reading
def _py(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value."""
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _read_provenance(group: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {k: _py(v) for k, v in group.attrs.items()}
    for key, obj in group.items():
        if isinstance(obj, h5py.Group):
            out[key] = _read_provenance(obj)
        elif h5py.check_string_dtype(obj.dtype) is not None:
            out[key] = [s if isinstance(s, str) else s.decode() for s in obj.asstr()[()]]
        else:
            arr = obj[()]
            out[key] = arr.tolist() if obj.attrs.get("_list", True) else arr
    return out


def _read_state(group: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, obj in group.items():
        if isinstance(obj, h5py.Group):
            out[key] = _read_state(obj)
        elif h5py.check_string_dtype(obj.dtype) is not None:
            out[key] = obj.asstr()[()]
        else:
            out[key] = np.asarray(obj[()])
    return out


def read_result(path: str | os.PathLike) -> ResultData:
    """Read a result or checkpoint file written by :func:`write_result`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"result file {str(p)!r} not found; check the path "
                        "(runs write <output.directory>/result.h5)")
    from .filters import load  # noqa: PLC0415

    load()  # hdf5plugin's filters, if installed, for files repacked with compression

    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DataError(f"{p}: not a readable HDF5 file ({exc}); "
                        "give a ptychompi result .h5") from None
    with f:
        missing = [k for k in _ROOT if not isinstance(f.get(k), h5py.Dataset)]
        if missing:
            raise DataError(f"{p}: not a ptychompi result file (no {', '.join(missing)} "
                            "dataset); give the result.h5 a run wrote")
        config = ""
        if isinstance(f.get("config"), h5py.Dataset):
            config = f["config"].asstr()[()]
        prov = f.get("provenance")
        state = f.get("state")
        return ResultData(
            object=f["object"][()],
            probe=f["probe"][()],
            positions=np.asarray(f["positions"][()], np.float64),
            error=np.asarray(f["error"][()], np.float64).reshape(-1),
            pixel_size=float(np.asarray(f["pixel_size"][()]).reshape(-1)[0]),
            config_yaml=config,
            provenance=_read_provenance(prov) if isinstance(prov, h5py.Group) else {},
            state=_read_state(state) if isinstance(state, h5py.Group) else None,
            refined_positions=(np.asarray(f["refined_positions"][()], np.float64)
                               if isinstance(f.get("refined_positions"), h5py.Dataset)
                               else None),
            position_transform=(np.asarray(f["position_transform"][()], np.float64)
                                if isinstance(f.get("position_transform"), h5py.Dataset)
                                else None),
        )


# ----------------------------------------------------------------------------- checks
def estimate_result_bytes(object_shape: tuple[int, ...], probe_shape: tuple[int, ...],
                          n_positions: int, iterations: int, checkpoint_state_bytes: int = 0,
                          complex_bytes: int = 8) -> int:
    """Approximate size of one result file (``complex_bytes``: 8 single, 16 double)."""
    obj = int(np.prod(object_shape)) * complex_bytes
    probe = int(np.prod(probe_shape)) * complex_bytes
    return obj + probe + 16 * n_positions + 8 * iterations + int(checkpoint_state_bytes) + 65536


def check_output_dir(directory: str | os.PathLike, expected_bytes: int,
                     replaced_bytes: int = 0) -> None:
    """Create ``directory`` if needed; fail early if it is not writable or lacks space.

    Twice ``expected_bytes`` must be free: the atomic write holds the old and new file at once.
    ``replaced_bytes`` (files already there that the run rewrites, e.g. on ``--resume``)
    count as free.
    """
    d = Path(directory)
    fix = "set output.directory to a writable folder"
    if d.exists() and not d.is_dir():
        raise PtychompiError(f"output directory {str(d)!r} is not a folder (a file has that "
                             f"name); {fix}")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PtychompiError(f"output directory {str(d)!r} cannot be created "
                             f"({exc.strerror or exc}); {fix}") from None
    try:
        fd, name = tempfile.mkstemp(prefix=".ptychompi-write-test-", dir=d)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise PtychompiError(f"output directory {str(d)!r} is not writable "
                             f"({exc.strerror or exc}); {fix}") from None
    free = shutil.disk_usage(d).free
    need = 2 * int(expected_bytes)
    if free + int(replaced_bytes) < need:
        raise PtychompiError(f"output directory {str(d)!r} has {format_bytes(free)} free but the "
                             f"results need {format_bytes(need)} (twice the result size); "
                             f"free some space or {fix} on another file system")
