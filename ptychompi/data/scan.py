"""The scan data model: a lazily read scan on disk (frames, positions, mask, geometry).

Readers (``io/cxi.py``, ``io/aps.py``) subclass :class:`ScanSource`. Nothing is loaded until
:meth:`ScanSource.read` is called with the frame indices a rank owns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError


@dataclass
class ScanGeometry:
    """Geometry recorded in a file (SI units); ``None`` where the file does not say."""

    wavelength_m: float | None = None
    distance_m: float | None = None
    detector_pixel_m: float | None = None


@dataclass
class ScanSource(ABC):
    """A scan on disk.

    ``positions_m[j] = (row, col)`` is the beam position on the sample in metres for frame j,
    already in ptychompi's convention (DESIGN.md section 3: for CXI, row = +y, col = +x of the
    sample translation with default basis vectors). ``mask`` is True on valid pixels.
    """

    path: str
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: np.dtype
    positions_m: np.ndarray
    mask: np.ndarray | None = None
    geometry: ScanGeometry = field(default_factory=ScanGeometry)
    illumination: np.ndarray | None = None  # complex (M, M) or (K, M, M) probe, if stored
    compression: str = "none"
    metadata: dict = field(default_factory=dict)

    @abstractmethod
    def _read_sorted(self, indices: np.ndarray) -> np.ndarray:
        """Frames at sorted, unique ``indices`` as an array (k, M, M)."""

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (any order) as float32 (k, M, M), centred as on disk."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.zeros((0, *self.frame_shape), np.float32)
        if idx.min() < 0 or idx.max() >= self.n_frames:
            raise DataError(f"{self.path}: frame index {int(idx.max())} out of range "
                            f"0..{self.n_frames - 1}")
        unique, inverse = np.unique(idx, return_inverse=True)
        frames = np.asarray(self._read_sorted(unique), dtype=np.float32)
        return frames[inverse]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open files."""

    def __enter__(self) -> ScanSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def validate(self) -> None:
        """Check shapes and counts; raise a one-line DataError on the first problem."""
        if self.n_frames == 0:
            raise DataError(f"{self.path}: the scan holds no frames; check data.path")
        pos = np.asarray(self.positions_m)
        if pos.ndim != 2 or pos.shape[1] != 2:
            raise DataError(f"{self.path}: positions have shape {pos.shape}, expected (N, 2)")
        if len(pos) != self.n_frames:
            raise DataError(f"{self.path}: {self.n_frames} frames but {len(pos)} positions; "
                            "frames and positions must have the same length")
        if not np.all(np.isfinite(pos)):
            raise DataError(f"{self.path}: positions contain NaN or infinity")
        if self.mask is not None and tuple(self.mask.shape) != tuple(self.frame_shape):
            raise DataError(f"{self.path}: mask shape {self.mask.shape} does not match frames "
                            f"{self.frame_shape}")


@dataclass
class ArrayScan(ScanSource):
    """A scan held in memory (simulation, the ptychopy numpy API, tests)."""

    frames: np.ndarray | None = None

    def _read_sorted(self, indices: np.ndarray) -> np.ndarray:
        return self.frames[indices]
