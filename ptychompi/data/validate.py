"""Checks of the data before the engines see it: each problem becomes one line naming the fix.

The engines assume sane input (photons in the frames, a finite non-zero starting probe, an
object that fits in memory, positive distances); these checks run in the data layer, before
any array of the object's size is allocated and before the first iteration.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

#: bytes per object pixel a rank holds at once (the global complex128 start, the engine's
#: complex64 object and its accumulators)
OBJECT_BYTES_PER_PX = 48
_NAMED_OUTLIERS = 5


def check_photons(power: float, n_frames: int, path: str) -> None:
    """Every frame empty (no photons in any valid pixel): nothing to reconstruct from."""
    if not power > 0:
        raise DataError(f"{path}: all {n_frames} frames hold zero photons in their valid "
                        "pixels; check data.path, the mask and preprocess.threshold")


def check_positive(value: float, key: str, from_file: bool) -> float:
    """A distance, pixel size or wavelength that divides later: finite and above zero."""
    if np.isfinite(value) and value > 0:
        return value
    where = "the data file records" if from_file else "the config sets"
    raise ConfigError(f"geometry.{key}: {where} {value!r}, which must be a positive number; "
                      f"set geometry.{key} to the real value in SI units")


@contextlib.contextmanager
def guess_errors(cfg: Any, what: str) -> Iterator[None]:
    """A starting-guess file whose values are not numbers (strings, records) -> one line."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        path = getattr(cfg, f"{what}_guess")
        if path is None:
            raise
        raise ConfigError(f"algorithm.{what}_guess {path!r} does not hold numbers "
                          f"({' '.join(str(exc).split())}); store a real or complex "
                          "array") from None


def check_guess(array: np.ndarray, what: str, path: str | None) -> None:
    """The starting probe or object: numeric, finite and not all zero."""
    source = f"algorithm.{what}_guess {path!r}" if path else f"the starting {what}"
    a = np.asarray(array)
    if a.dtype.kind not in "biufc":
        raise ConfigError(f"{source} holds {a.dtype} values, not numbers; store a real or "
                          "complex array")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{source} holds NaN or infinite values; give a finite {what}")
    if what == "probe" and not np.any(a):
        raise ConfigError(f"{source} is all zero; give a probe with some intensity, or leave "
                          "algorithm.probe_guess unset to start from the data")


def memory_bytes() -> int | None:
    """Physical memory of this machine (None where the platform does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def outlying_positions(positions_m: np.ndarray, frame_m: float) -> list[int]:
    """Positions far from the rest: beyond 20 times the median spread plus a frame."""
    pos = np.asarray(positions_m, np.float64).reshape(-1, 2)
    centre = np.median(pos, axis=0)
    dist = np.abs(pos - centre)
    spread = np.median(dist, axis=0)
    limit = 20 * spread + max(frame_m, 0.0)
    return [int(i) for i in np.flatnonzero((dist > limit).any(axis=1))]


def check_object_size(shape: tuple[int, int], positions_m: np.ndarray, pixel_m: float,
                      frame: int, memory: int | None = None) -> None:
    """The object must fit in memory; name the positions that make it too large."""
    memory = memory_bytes() if memory is None else memory
    pixels = int(shape[0]) * int(shape[1])
    need = pixels * OBJECT_BYTES_PER_PX
    if memory is None or need <= memory:
        return
    text = (f"the object would be {shape[0]} x {shape[1]} pixels ({_format_bytes(need)} to "
            f"reconstruct), more than this machine's {_format_bytes(memory)} of memory")
    far = outlying_positions(positions_m, frame * pixel_m)
    pos = np.asarray(positions_m, np.float64).reshape(-1, 2)
    if far:
        named = ", ".join(f"{i} ({pos[i, 0]:.4g} m, {pos[i, 1]:.4g} m)"
                          for i in far[:_NAMED_OUTLIERS])
        more = f" and {len(far) - _NAMED_OUTLIERS} more" if len(far) > _NAMED_OUTLIERS else ""
        text += (f"; positions {named}{more} lie far outside the rest of the scan: fix or "
                 "drop them (data.n_frames keeps the first N)")
    else:
        span = pos.max(axis=0) - pos.min(axis=0)
        text += (f"; the positions span {span[0]:.4g} x {span[1]:.4g} m at {pixel_m:.4g} m per "
                 "pixel: check the position units and the geometry")
    raise DataError(text)
