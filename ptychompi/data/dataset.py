"""From a config to what each rank reconstructs: the scan layout and the rank's frames.

:func:`plan_layout` is a pure function of the config and the file's small metadata, so every
rank computes the same layout without communication; :func:`load_amplitudes` reads only the
frames a rank owns, preprocesses them and returns amplitudes ready for the engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import ConfigError, DataError
from ..model.geometry import (
    farfield_pixel_size,
    fresnel_scaling,
    object_shape,
    positions_to_pixels,
    wavelength_from_kev,
)
from .scan import ScanSource
from .validate import check_object_size, check_positive


@dataclass
class ScanLayout:
    """Everything about a scan that every rank must agree on."""

    n_frames: int
    frame: int
    positions_px: np.ndarray  # (N, 2) float64, top-left window corners in the global object
    object_shape: tuple[int, int]
    pixel_size_m: float
    wavelength_m: float
    propagation: str
    distance_m: float  # effective propagation distance (near field: Fresnel-scaled)
    source_path: str


def open_source(cfg: Config) -> ScanSource:
    """Open the scan named by ``data.path`` with the reader its format needs."""
    data = cfg.data
    if not data.path:
        raise ConfigError("data.path is not set; point it at a .cxi file or APS row files")
    fmt = data.format
    path = Path(data.path)
    if fmt == "auto":
        fmt = "cxi" if path.suffix.lower() == ".cxi" else "aps"
        if fmt == "aps" and path.is_file() and _is_cxi(path):
            fmt = "cxi"
    if fmt == "cxi":
        from ..io.cxi import read_cxi  # noqa: PLC0415

        source = read_cxi(str(path))
    else:
        from ..io.aps import open_aps  # noqa: PLC0415

        source = open_aps(data)
    source.validate()
    return source


def _is_cxi(path: Path) -> bool:
    import h5py  # noqa: PLC0415

    try:
        with h5py.File(path, "r") as f:
            return "entry_1" in f
    except OSError:
        return False


def plan_preprocessor(cfg: Config, source: ScanSource):  # -> Preprocessor
    from .preprocess import plan_preprocess  # noqa: PLC0415

    return plan_preprocess(cfg.preprocess, source)


def _pick(value: float | None, from_file: float | None, key: str) -> float:
    """The config's value, else the file's; either must be a positive number."""
    if value is not None:
        return check_positive(float(value), key, from_file=False)
    if from_file is not None:
        return check_positive(float(from_file), key, from_file=True)
    raise ConfigError(f"geometry.{key} is not set and the data file does not record it; "
                      f"set geometry.{key} in the config")


def plan_layout(cfg: Config, source: ScanSource, frame: int, pixel_scale: int = 1) -> ScanLayout:
    """Geometry, positions in object pixels and the global object shape."""
    g = cfg.geometry
    wavelength = (wavelength_from_kev(g.energy_kev) if g.energy_kev is not None
                  else _pick(None, source.geometry.wavelength_m, "energy_kev"))
    distance = _pick(g.distance_m, source.geometry.distance_m, "distance_m")
    pixel = _pick(g.detector_pixel_m, source.geometry.detector_pixel_m, "detector_pixel_m")
    pixel *= pixel_scale
    if g.propagation == "farfield":
        dx = farfield_pixel_size(wavelength, distance, frame, pixel)
        z = distance
    else:
        near = fresnel_scaling(pixel, distance, g.focus_to_sample_m)
        dx, z = near.pixel_size_m, near.distance_m
    n = source.n_frames if cfg.data.n_frames is None else min(cfg.data.n_frames,
                                                               source.n_frames)
    pos = positions_to_pixels(source.positions_m[:n], dx, flip=tuple(g.flip_positions),
                              transpose=g.transpose_positions, margin_px=g.object_margin_px)
    shape = object_shape(pos, (frame, frame), g.object_margin_px)
    check_object_size(shape, source.positions_m[:n], dx, frame)
    return ScanLayout(n, frame, pos, shape, dx, wavelength, g.propagation, z, source.path)


def load_amplitudes(source: ScanSource, preprocessor, indices: np.ndarray,
                    layout: ScanLayout) -> np.ndarray:
    """This rank's frames as amplitudes sqrt(I), float32 (k, M, M), invalid pixels = -1.

    Far-field frames are ``ifftshift``-ed once here (zero frequency to the corner).
    """
    raw = source.read(indices)
    frames = preprocessor.apply(raw, indices)
    if frames.shape[1:] != (layout.frame, layout.frame):
        raise DataError(f"{source.path}: frames are {frames.shape[1:]} after preprocessing, "
                        f"expected square {layout.frame}x{layout.frame}")
    amp = np.where(frames >= 0, np.sqrt(np.maximum(frames, 0)), -1.0).astype(np.float32)
    if layout.propagation == "farfield":
        amp = np.fft.ifftshift(amp, axes=(-2, -1))
    return np.ascontiguousarray(amp)
