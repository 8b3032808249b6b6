"""One run per output folder: an exclusive ``flock`` on ``<output>/.ptychompi.lock``.

Rank 0 takes the lock before it writes anything there and holds it until the process ends;
the kernel releases it when the process exits, however it exits (``kill -9`` included), so a
crashed run never leaves the folder locked. The lock file names its holder (pid, host, start
time) for the error a second run prints. ``flock`` is local to one machine on some network
file systems: two runs on different nodes into one NFS folder may not see each other's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from ..errors import PtychompiError

__all__ = ["LOCK_NAME", "OutputLock", "lock_output", "remove_stale_temporaries"]

LOCK_NAME = ".ptychompi.lock"


class OutputLock:
    """A held lock; :meth:`release` (or process exit) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd: int | None = fd
        self.path = path

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def lock_output(directory: str | os.PathLike) -> OutputLock:
    """Take the folder's lock, or raise naming the run that holds it."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise PtychompiError(f"cannot create the lock file {path} ({exc.strerror or exc}); "
                             "set output.directory to a writable folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        finally:
            os.close(fd)
        raise PtychompiError(
            f"output directory {str(directory)!r} is in use by another ptychompi run "
            f"({holder or 'holder unknown'}); wait for it to end, or set output.directory "
            "to another folder") from None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    text = f"pid {os.getpid()} on {socket.gethostname()}, started {stamp}\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)
    return OutputLock(fd, path)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete ``*.tmp-<pid>`` files a killed run left (call only while holding the lock)."""
    removed = []
    root = Path(directory)
    for folder in (root, root / "checkpoint", root / "live"):
        if not folder.is_dir():
            continue
        for p in folder.glob("*.tmp-*"):
            if p.is_file() and p.name.rsplit(".tmp-", 1)[-1].isdigit():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed
