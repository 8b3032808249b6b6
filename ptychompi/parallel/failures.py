"""Failures seen by some ranks, made everyone's: a collective check at points every rank
reaches (:func:`agree`, raising :class:`RankFailure` with the same one line everywhere) and an
abort where other ranks may be blocked in a collective (:func:`abort_on_error`). See
:mod:`ptychompi.parallel.exchange` for when each applies."""

from __future__ import annotations

import sys
import time
from typing import Any, NoReturn

import numpy as np

from ..errors import PtychompiError, squash


class RankFailure(PtychompiError):
    """A problem seen on one or more ranks, raised on every rank by a collective check.

    ``origin_rank`` is the lowest failing rank; ``failures`` lists every ``(rank, message)``.
    """

    def __init__(self, message: str, origin_rank: int,
                 failures: list[tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.origin_rank = origin_rank
        self.failures = failures or [(origin_rank, message)]


def one_line(error: BaseException) -> str:
    """The error as one line: its message for a PtychompiError, else ``Type: message``."""
    text = str(error) if isinstance(error, PtychompiError) else \
        f"{type(error).__name__}: {error}"
    return squash(text) or type(error).__name__


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def agree(comm: Any | None, error: BaseException | None, timed: Any = _call) -> None:
    """Collective failure check: re-raise the problem of any rank on every rank.

    Every rank of ``comm`` must call it at the same point, passing the exception it caught
    (or ``None``). One rank (``comm`` None or of size 1): a :class:`PtychompiError` is raised as
    it is, any other exception as a one-line PtychompiError chained to it. Several ranks: one
    ``Allreduce`` of a flag when all is well; otherwise the one-line messages are gathered and
    every rank raises :class:`RankFailure` with the same text: the message alone when every
    rank failed the same way, else ``rank R: message`` for the lowest failing rank, plus a count
    of the others. ``timed`` wraps each MPI call (the exchange's accounting).
    """
    if comm is None or comm.Get_size() == 1:
        if isinstance(error, PtychompiError):
            raise error
        if error is not None:
            raise PtychompiError(one_line(error)) from error
        return
    from mpi4py import MPI  # noqa: PLC0415

    flag = np.array([0 if error is None else 1], np.int32)
    total = np.zeros(1, np.int32)
    timed(comm.Allreduce, flag, total, op=MPI.MAX)
    if not total[0]:
        return
    entries = timed(comm.allgather, None if error is None else one_line(error))
    failures = [(r, m) for r, m in enumerate(entries) if m is not None]
    origin, cause = failures[0]
    if len(failures) == len(entries) and len({m for _, m in failures}) == 1:
        text = cause  # the same problem everywhere: no rank to name
    else:
        text = f"rank {origin}: {cause}"
        if len(failures) > 1:
            others = ", ".join(str(r) for r, _ in failures[1:])
            text += f"; {len(failures) - 1} more rank(s) failed too ({others})"
    raise RankFailure(text, origin, failures) from error


ABORT_GRACE_S = 0.5


def abort_on_error(comm: Any | None, exc: BaseException) -> NoReturn:
    """End the whole run after an error on this rank only, where others may be blocked.

    Prints ``ptychompi: error on rank R: <message>`` once to stderr and calls
    ``comm.Abort(1)``, so no rank hangs in a collective. Without a communicator, exits with
    code 1. Use :meth:`MPIExchange.check` instead where every rank reaches the same point.
    """
    rank = comm.Get_rank() if comm is not None else 0
    print(f"ptychompi: error on rank {rank}: {one_line(exc)}", file=sys.stderr, flush=True)
    if comm is not None:
        time.sleep(ABORT_GRACE_S)  # let mpiexec forward the line before the job is killed
        comm.Abort(1)
    raise SystemExit(1)
