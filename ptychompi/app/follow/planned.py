"""The planned scan of ``run --follow`` and what stands in for what has not arrived: the config
over the whole planned scan, a view of a source's arrived frames, and an engine for a tile with
no position yet."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ...config import Config
from ...errors import ConfigError


def is_cxi(cfg: Config) -> bool:
    """Whether ``data.path`` is a CXI file (followed as HDF5 SWMR) rather than APS rows."""
    d = cfg.data
    return d.format == "cxi" or (d.format == "auto"
                                 and str(d.path or "").lower().endswith(".cxi"))


def planned_config(cfg: Config) -> Config:
    """``cfg`` with ``data.n_frames`` the planned scan's frame count (from ``scan_dims`` or
    the MDA file when not set): the row files on disk are not the scan yet."""
    d = cfg.data
    if is_cxi(cfg) and not d.scan_dims:
        raise ConfigError("data.follow of a CXI file needs data.scan_dims [rows, cols]: a "
                          "row is cols frames")
    n = d.n_frames
    if n is None and d.scan_dims:
        n = int(math.prod(d.scan_dims))
    if n is None and d.mda_file:
        from ...io.aps import mda_positions  # noqa: PLC0415

        n = len(mda_positions(d.mda_file, d.mda_pv_map)[0])
    if n is None:
        raise ConfigError("data.follow needs the planned scan's size: set data.scan_dims "
                          "[rows, cols], data.n_frames or data.mda_file")
    return dataclasses.replace(cfg, data=dataclasses.replace(d, n_frames=int(n)))


class FrameView:
    """A scan source seen through some of its frames (``frames``): the rows in at the start
    when they are not the first ones, for planning the preprocessing."""

    def __init__(self, source: Any, frames: np.ndarray) -> None:
        self._source, self._frames = source, np.asarray(frames, np.int64)
        self.n_frames = len(self._frames)
        self.positions_m = source.positions_m[self._frames]

    def read(self, indices: Any) -> np.ndarray:
        return self._source.read(self._frames[np.asarray(indices, np.int64)])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)


def frame_view(source: Any, frames: np.ndarray) -> Any:
    """``source`` seen through ``frames`` (a plain copy with fewer frames for the first
    ones)."""
    n = len(frames)
    if np.array_equal(frames, np.arange(n)):
        return dataclasses.replace(source, n_frames=n, positions_m=source.positions_m[:n])
    return FrameView(source, frames)


class IdleEngine:
    """Stands in on a rank whose tile has no arrived position: holds its box of the object
    and the probe, keeps the iteration count and errors, never iterates."""

    name = "idle"
    fused = False
    refiner = None

    def __init__(self, backend: Any, obj: Any, probe: Any, iteration: int,
                 errors: list[float], seconds_compute: float) -> None:
        self.backend = backend
        self.object = obj
        self.probe = probe
        self.iteration = iteration
        self.errors = errors
        self.seconds_compute = seconds_compute

    def illumination(self) -> Any:
        return self.backend.xp.zeros(self.object.shape, dtype=self.backend.real_dtype)

    def close(self) -> None:
        pass
