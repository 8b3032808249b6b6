"""SIGINT and SIGTERM during a run: a signal to any one rank ends every rank within seconds.

On one rank the signal becomes :class:`Interrupted`, which the command line reports as one
line. On several ranks the signalled rank prints that line and calls ``MPI_Abort``, which ends
the whole job: the other ranks may be waiting in a collective for it and would otherwise wait
forever. When every rank receives the signal (Ctrl-C on ``mpiexec``), rank 0 speaks and aborts
at once while the others wait a moment first, so the line appears once; they wait in a thread
of their own, so that a rank 0 blocked in a collective that waits for them gets out of it.
Checkpoints and results are written to temporary names and renamed, so an abort never leaves a
torn file; the next run in the folder removes the temporaries.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Guard", "Interrupted", "install", "message"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: how long ranks other than 0 wait before speaking, so that rank 0 speaks alone when every
#: rank was signalled (its abort ends them first)
OTHER_RANK_DELAY_S = 1.5
ABORT_GRACE_S = 0.3


class Interrupted(BaseException):  # named like KeyboardInterrupt
    """A run stopped by a signal (one rank)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def message(signum: int, rank: int | None = None) -> str:
    """The one line printed for a signal."""
    where = f" on rank {rank}" if rank is not None else ""
    return (f"ptychompi: interrupted by {signal.Signals(signum).name}{where}; the last "
            "checkpoint is kept (continue with --resume)")


def speak_and_abort(comm: Any, signum: int, rank: int, delay_s: float = 0.0) -> None:
    """After ``delay_s``, print the signal's line and end the whole job (``MPI_Abort``)."""
    time.sleep(delay_s)
    print(message(signum, rank), file=sys.stderr, flush=True)
    time.sleep(ABORT_GRACE_S)  # let mpiexec forward the line before the job ends
    comm.Abort(128 + signum)


class Guard:
    """What :func:`install` returns: call it to restore the previous handlers; :meth:`check`
    at points where the run is about to make progress that outlives a signal (an iteration's
    checkpoint or the result)."""

    def __init__(self, restore: Callable[[], None]) -> None:
        self._restore = restore
        self.speaker: threading.Thread | None = None  # a rank other than 0, signalled

    def check(self) -> None:
        """On a rank that has been signalled but waits before speaking, wait here: the job
        ends with that rank's line (or rank 0's, sooner) and nothing more is written."""
        if self.speaker is not None:
            self.speaker.join()

    def __call__(self) -> None:
        self.check()  # a signal that came in the run's last moments is not lost
        self._restore()


def install(comm: Any | None) -> Guard:
    """Handle SIGINT/SIGTERM for a run on ``comm`` (None: one rank); returns the undo."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    several = comm is not None and comm.Get_size() > 1
    guard = Guard(lambda: None)

    def handler(signum: int, frame: Any) -> None:  # the signal API's arguments
        if not several:
            raise Interrupted(signum)
        rank = comm.Get_rank()
        for s in SIGNALS:  # a second signal must not interrupt the abort
            signal.signal(s, signal.SIG_IGN)
        if rank == 0:
            speak_and_abort(comm, signum, rank)
        # elsewhere the main thread goes on to the next check: rank 0 may be blocked in a
        # collective that waits for this rank, and can only run its own handler once this
        # rank gets there
        guard.speaker = threading.Thread(target=speak_and_abort,
                                         args=(comm, signum, rank, OTHER_RANK_DELAY_S),
                                         name="ptychompi-interrupt", daemon=True)
        guard.speaker.start()

    try:
        for s in SIGNALS:
            signal.signal(s, handler)
    except ValueError:  # not the main thread (an embedding application): leave them alone
        return guard

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    guard._restore = restore
    return guard
