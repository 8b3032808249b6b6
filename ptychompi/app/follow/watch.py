"""Which APS row files of a scan being written are complete (rank 0 looks; nothing is read).

A row file counts as complete once (a) its size and modification time have stayed the same
between two looks at least ``poll_s`` apart, (b) it opens read-only (with HDF5's file locking
a file still open for writing does not) and (c) its dataset holds the row's frames. Rows
count as soon as they are complete, in any order (the planned positions are known, so a row
written before those ahead of it need not wait): :attr:`RowWatcher.done` holds them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h5py

from ...io.aps_patterns import _file_for, _has_index, resolve_pattern


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # when this size and time were first seen


@dataclass
class RowWatcher:
    """Looks at the row files ``pattern % (first_index + i)`` of a scan of ``n_frames``.

    ``frames_per_file`` may be None until the first row is complete (then it is what that
    file holds). ``clock`` is injectable for tests.
    """

    path: str
    first_index: int
    n_frames: int
    dataset: str
    poll_s: float
    frames_per_file: int | None = None
    clock: Callable[[], float] = time.monotonic
    pattern: str | None = None
    complete: int = 0  # complete rows (in any order)
    done: set[int] = field(default_factory=set)  # which rows are complete
    _seen: dict[int, _Seen] = field(default_factory=dict)

    @property
    def planned_rows(self) -> int | None:
        """Row files of the whole planned scan (None until the frames per file are known)."""
        if self.frames_per_file is None:
            return None
        return -(-self.n_frames // self.frames_per_file)

    def _resolve(self) -> bool:
        """The printf pattern (a first row file's name needs that file to exist)."""
        if self.pattern is not None:
            return True
        name = os.path.basename(self.path)
        if "%" in name or "#" in name or os.path.isfile(self.path):
            self.pattern, self.first_index = resolve_pattern(self.path, self.first_index)
            return True
        return False

    def file(self, row: int) -> str:
        assert self.pattern is not None
        return _file_for(self.pattern, self.first_index + row)

    def poll(self) -> int:
        """The number of complete rows (never decreases; which ones: :attr:`done`). Every
        row file present is looked at, so rows written faster than the looks come in
        together (until the first row is complete the row count is unknown: at most one
        row a frame is looked for)."""
        if not self._resolve():
            return 0
        row = 0
        while row < (self.planned_rows or self.n_frames):
            if row not in self.done:
                stable = self._stable(row)
                if stable and self._holds_row(row):
                    self._seen.pop(row, None)
                    self.done.add(row)
            if not _has_index(self.pattern or ""):
                break  # one file holds the whole scan
            row += 1
        self.complete = len(self.done)
        return self.complete

    def _expected(self, row: int) -> int:
        fpf = self.frames_per_file or 1
        return max(1, min(fpf, self.n_frames - row * fpf))

    def _stable(self, row: int) -> bool | None:
        """Whether row file ``row`` has kept its size and time for ``poll_s`` (None: absent)."""
        try:
            st = os.stat(self.file(row))
        except OSError:
            return None
        now = self.clock()
        seen = self._seen.get(row)
        if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._seen[row] = _Seen(st.st_size, st.st_mtime_ns, now)
            return False
        return now - seen.since >= self.poll_s

    def _holds_row(self, row: int) -> bool:
        """Whether the (stable) file opens and holds the row's frames."""
        held = self._frames_held(self.file(row))
        if held is None:
            return False
        if self.frames_per_file is None:
            self.frames_per_file = held
        return held >= self._expected(row)

    def _frames_held(self, path: str) -> int | None:
        """Frames in the file's dataset, or None when it cannot be opened (still written)."""
        from ...io.filters import load  # noqa: PLC0415

        load()
        try:
            with h5py.File(path, "r") as f:
                ds = f.get(self.dataset)
                if not isinstance(ds, h5py.Dataset) or ds.ndim not in (2, 3):
                    return None
                return 1 if ds.ndim == 2 else int(ds.shape[0])
        except (OSError, KeyError, ValueError):
            return None
