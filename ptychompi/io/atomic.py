"""Files that appear only when complete: temporary name, flush, fsync, rename."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """An HDF5 file written under ``<path>.tmp-<pid>`` and renamed to ``path`` on success.

    A crash or an exception leaves any previous file at ``path`` untouched and no temporary.
    A write that fails (a full disk) raises one OSError: HDF5 writes through a
    :class:`_Sink`, which after the first failure takes every further write (the flushes of
    closing) without touching the disk, so the file closes cleanly instead of failing again
    as each of its objects is freed.
    """
    with atomic_path(path) as tmp, open(tmp, "w+b") as raw:
        sink = _Sink(raw)
        try:
            with h5py.File(sink, "w") as f:
                yield f
                f.flush()
        except (OSError, RuntimeError):
            if sink.failure is None:
                raise
            raise sink.failure from None  # HDF5 reports it as its own error, or not at all
        if sink.failure is not None:
            raise sink.failure


class _Sink:
    """The file object HDF5 writes through: the real file until a write fails, nothing after
    (the temporary is deleted anyway); the first failure is kept in :attr:`failure`."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.failure: OSError | None = None

    def _through(self, call: Any, *args: Any) -> Any:
        """``call(*args)`` on the real file, its OSError kept as :attr:`failure`."""
        try:
            return call(*args)
        except OSError as exc:
            self.failure = exc
            raise

    def write(self, data: Any) -> int:
        if self.failure is None:
            return self._through(self.raw.write, data)
        return len(memoryview(data))

    def flush(self) -> None:
        if self.failure is None:
            self._through(self.raw.flush)

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def readinto(self, buffer: Any) -> int:
        return self.raw.readinto(buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def truncate(self, size: int | None = None) -> int:
        if self.failure is None:
            return self._through(self.raw.truncate, size)
        return self.raw.tell() if size is None else size


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path ``<path>.tmp-<pid>`` to write; renamed to ``path`` on success.

    For writers that take a file name (TIFF, PNG, CSV): a full disk or any exception leaves
    no file at ``path`` (or the previous one) and no temporary.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
