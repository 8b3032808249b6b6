"""Files that appear only when complete: temporary name, flush, fsync, rename."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

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
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f
        f.flush()


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
