"""When rows come in: decisions made on rank 0 before each iteration and sent to every rank.

Before iteration ``k`` rank 0 decides how many complete rows the engines use from then on
(:class:`Decision`); every rank receives the same decision, so all ranks agree on which rows
are in at every iteration, and the decisions (the *schedule*, ``[[iteration, rows], ...]``,
the last entry marking the end of the scan) are all a run's result depends on: replaying a
schedule (``data.follow.schedule``) reproduces the run on any rank count. Rows are used as
soon as they are complete, in any order: an entry ``[iteration, rows]`` means the first
``rows`` rows, ``[iteration, rows, r1, r2, ...]`` the ``rows`` rows ``r1, r2, ...`` (0-based)
when they are not the first ones.

Rank 0 waits (sleeping, the other ranks too) while no row has arrived, or while the scan is
incomplete and the iterations its rows pay for are spent: with ``r`` of ``R`` rows in, the
engines run at most ``(iterations - kept) * r / R`` iterations (the kept ones,
``final_iterations``, run after the last row). A scan with no new
row for ``timeout_s`` is taken as ended (aborted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...config import FollowConfig
from ...errors import DataError
from .watch import RowWatcher

SLEEP_S = 0.005  # sleeping wait of the ranks other than 0 (no busy MPI wait)


def quiet_bcast(comm: Any | None, value: Any, root: int = 0) -> Any:
    """``comm.bcast(value, root)`` after a barrier the ranks wait in sleeping (the other ranks
    idle while ``root`` works or waits for files; MPI's own wait would spin a core)."""
    if comm is None or comm.Get_size() == 1:
        return value
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(SLEEP_S)
    return comm.bcast(value, root=root)


@dataclass(frozen=True)
class Decision:
    """The rows in from this iteration on; ``ended``: no more will come (``aborted``: the
    scan ended before its last planned row)."""

    rows: int
    ended: bool
    aborted: bool = False
    planned: int = 0  # row files of the planned scan (known once the first row is in)
    which: tuple[int, ...] | None = None  # the rows in (sorted), None: the first ``rows``

    @property
    def row_set(self) -> list[int]:
        """The rows in, sorted."""
        return list(range(self.rows)) if self.which is None else list(self.which)

    @property
    def entry(self) -> list[int]:
        """This decision's schedule entry without its iteration."""
        return [self.rows] + ([] if self.which is None else list(self.which))


def rows_decision(rows: set[int] | list[int], ended: bool, aborted: bool,
                  planned: int) -> Decision:
    """The decision for the set ``rows`` (``which`` only when they are not the first)."""
    ordered = tuple(sorted(rows))
    prefix = ordered == tuple(range(len(ordered)))
    return Decision(len(ordered), ended, aborted, planned, None if prefix else ordered)


@dataclass
class Arrivals:
    """Rank 0's arrival decisions (``watcher`` is None on the other ranks)."""

    cfg: FollowConfig
    total_iterations: int
    watcher: RowWatcher | None
    comm: Any | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    schedule: list[list[int]] = field(default_factory=list)
    current: Decision = field(default_factory=lambda: Decision(0, False))
    last_arrival: float = 0.0
    _polled: int = 0  # rank 0: complete rows at the last look

    def __post_init__(self) -> None:
        self.last_arrival = self.clock()

    @property
    def keep(self) -> int:
        """Iterations kept for after the last row."""
        if self.cfg.final_iterations is not None:
            return min(self.cfg.final_iterations, self.total_iterations)
        return max(1, self.total_iterations // 3) if self.total_iterations else 0

    def paced(self, rows: int, planned: int) -> int:
        """Iterations that may run with ``rows`` of ``planned`` rows in: the iterations before
        the kept ones, in proportion to the rows (a fast engine waits for the rows instead of
        spending the iterations on the first ones)."""
        return (self.total_iterations - self.keep) * rows // max(planned, 1)

    @property
    def rank(self) -> int:
        return 0 if self.comm is None else self.comm.Get_rank()

    def decide(self, iteration: int) -> Decision:
        """The decision before ``iteration`` (0-based: iterations done so far). Collective."""
        if self.current.ended:
            return self.current
        decision: Decision | BaseException | None = None
        if self.rank == 0:
            try:
                decision = self._decide(iteration)
            except Exception as exc:  # noqa: BLE001 - sent to every rank, raised there
                decision = exc
        decision = quiet_bcast(self.comm, decision)
        if isinstance(decision, BaseException):
            raise decision
        assert isinstance(decision, Decision)
        if (decision.rows, decision.ended) != (self.current.rows, self.current.ended):
            self.schedule.append([iteration, *decision.entry])
        self.current = decision
        return decision

    # ------------------------------------------------------------------ rank 0
    @property
    def planned(self) -> int:
        """Rank 0: the planned row files (0 while unknown)."""
        assert self.watcher is not None
        return self.watcher.planned_rows or 0

    def _decide(self, iteration: int) -> Decision:
        replay = self.cfg.schedule
        if replay:
            return self._replay(iteration, replay)
        assert self.watcher is not None
        while True:
            rows = self._poll()
            planned = self.planned
            if rows and rows >= planned:
                return Decision(planned, True, False, planned)
            if self.clock() - self.last_arrival > self.cfg.timeout_s:
                if rows == 0:
                    raise DataError(f"no complete row of {self.watcher.path} arrived "
                                    f"within data.follow.timeout_s = {self.cfg.timeout_s:g} s; "
                                    "check data.path and that the scan is running")
                return rows_decision(self._done(), True, True, planned)
            waiting = rows == 0 or iteration >= self.paced(rows, planned)
            if not waiting:
                return rows_decision(self._done(), False, False, planned)
            self.sleep(self.cfg.poll_s)

    def _done(self) -> set[int]:
        """Rank 0: the complete rows (a watcher without ``done`` counts the first ones)."""
        assert self.watcher is not None
        done = getattr(self.watcher, "done", None)
        return set(done) if done is not None else set(range(self._polled))

    def _poll(self) -> int:
        assert self.watcher is not None
        rows = self.watcher.poll()
        if rows > self.current.rows:
            self.last_arrival = self.clock()
        self._polled = max(rows, self.current.rows)
        return self._polled

    def _replay(self, iteration: int, replay: list[list[int]]) -> Decision:
        """The recorded decision in force at ``iteration``; waits until its rows are there."""
        due = [e for e in replay if e[0] <= iteration]
        if not due:
            raise DataError(f"data.follow.schedule starts at iteration {replay[0][0]}; it "
                            "must start at 0")
        entry = [int(v) for v in due[-1][1:]]
        needed = set(entry[1:]) if len(entry) > 1 else set(range(entry[0]))
        ended = len(due) == len(replay)
        t0 = self.clock()
        while True:
            self._poll()
            if needed <= self._done():
                break
            if self.clock() - t0 > self.cfg.timeout_s:
                raise DataError(f"data.follow.schedule: rows {sorted(needed - self._done())} "
                                f"did not arrive within data.follow.timeout_s = "
                                f"{self.cfg.timeout_s:g} s")
            self.sleep(self.cfg.poll_s)
        rows = len(needed)
        return rows_decision(needed, ended, ended and rows < self.planned, self.planned)
