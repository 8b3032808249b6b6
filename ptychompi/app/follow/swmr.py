"""How many rows of a CXI file written under HDF5 SWMR are complete (rank 0; reads nothing).

The writer (HDF5 single-writer/multiple-reader mode) writes the translations of the whole
planned scan first, then appends frames to ``/entry_1/instrument_1/detector_1/data`` and
flushes. A reader opened in SWMR mode sees the frames flushed so far after a refresh; a row
(``row_frames`` frames, ``data.scan_dims[1]``) counts once a look at least ``poll_s`` earlier
already saw all its frames (so a frame the writer is still flushing is never read).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h5py

from ...io.cxi import DATA_LINKS, DETECTOR


@dataclass
class SwmrWatcher:
    """The :class:`~ptychompi.app.follow.watch.RowWatcher` interface for one SWMR CXI file."""

    path: str
    n_frames: int
    row_frames: int
    poll_s: float
    clock: Callable[[], float] = time.monotonic
    complete: int = 0
    _file: Any = None
    _looks: list[tuple[float, int]] = field(default_factory=list)

    @property
    def planned_rows(self) -> int:
        return -(-self.n_frames // self.row_frames)

    @property
    def frames_per_file(self) -> int:
        return self.row_frames

    def _frames(self) -> int | None:
        """Frames the writer has flushed (None: the file is not there or not yet readable)."""
        if self._file is None:
            if not os.path.isfile(self.path):
                return None
            try:
                self._file = h5py.File(self.path, "r", libver="latest", swmr=True)
            except OSError:
                return None
        ds = self._file.get(DATA_LINKS + "/data") or self._file.get(DETECTOR + "/data")
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 3:
            return None
        ds.refresh()
        return int(ds.shape[0])

    def poll(self) -> int:
        """The number of complete rows (never decreases)."""
        frames = self._frames()
        if frames is None:
            return self.complete
        now = self.clock()
        self._looks.append((now, frames))
        old = [i for i, (t, _) in enumerate(self._looks) if now - t >= self.poll_s]
        if old:  # the latest look at least poll_s ago: its frames are settled
            self._looks = self._looks[old[-1]:]
            n = min(self._looks[0][1], self.n_frames)
            rows = self.planned_rows if n >= self.n_frames else n // self.row_frames
            self.complete = max(self.complete, rows)
        return self.complete

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
