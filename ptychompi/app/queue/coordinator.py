"""The queue's coordinator (world rank 0): hands jobs to group leaders by MPI messages, polls
the queue database and the inbox; the message tags and :class:`QueueOptions`."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import PtychompiError
from .store import QueueStore

TAG_TO_COORD = 71
TAG_TO_LEADER = 72
NAP_S = 0.02  # sleep between non-blocking tests while waiting
PROGRESS_EVERY_S = 2.0


@dataclass
class QueueOptions:
    """How ``ptychompi queue run`` runs (the same on every rank)."""

    folder: Path
    ranks_per_job: int = 1
    wait_s: float = 0.0  # keep serving this long once the queue is empty
    poll_s: float = 1.0  # how often the coordinator reads the database and the inbox
    inbox: Path | None = None
    template: dict | None = None
    checkpoint_every: int = 0  # for jobs whose config has none (0: leave them)
    max_attempts: int = 3  # queue runs a job may be interrupted in before it is failed
    coordinator: str = "auto"  # auto | thread | inline | rank
    notify: Any = None  # EmailConfig for per-job mail of jobs without their own, and the summary
    quiet: bool = False
    finished: list[dict] = field(default_factory=list)  # filled on rank 0: this run's outcomes


def check_group_size(world_size: int, k: int, coordinator: str = "auto") -> int:
    """Validate ``--ranks-per-job``; returns the number of groups."""
    workers = world_size - 1 if coordinator == "rank" else world_size
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PtychompiError(f"--ranks-per-job {k!r} must be a whole number of at least 1")
    if workers < 1:
        raise PtychompiError("--coordinator rank needs at least 2 ranks (one coordinates)")
    if k > workers:
        raise PtychompiError(f"--ranks-per-job {k} is larger than the {workers} rank(s) that "
                             f"run jobs; use at most {workers}")
    if workers % k:
        divisors = [d for d in range(1, workers + 1) if workers % d == 0]
        raise PtychompiError(f"--ranks-per-job {k} does not divide the {workers} rank(s) that "
                             f"run jobs; use one of {', '.join(map(str, divisors))}")
    return workers // k


def _say(folder: Path, line: str, quiet: bool) -> None:
    """A coordinator line: to stderr and appended to ``<queue>/queue.log``."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    if not quiet:
        print(f"queue: {line}", file=sys.stderr, flush=True)
    try:
        with open(folder / "queue.log", "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {line}\n")
    except OSError:
        pass


class Coordinator:
    """Dispatch on world rank 0: answers the group leaders' messages; ``service`` never
    blocks."""

    def __init__(self, ctl: Any, leaders: dict[int, int], opts: QueueOptions) -> None:
        self.ctl = ctl
        self.leaders = leaders  # group id -> world rank of its leader
        self.opts = opts
        self.store = QueueStore(opts.folder)
        self.idle: list[int] = []
        self.running: dict[int, int] = {}  # group -> job id
        self.stopped: set[int] = set()
        self.cancel_sent: set[int] = set()
        self.sends: list[Any] = []
        self.last_poll = 0.0
        self.empty_since: float | None = None
        self.done = False

    # ---------------------------------------------------------------- messages
    def _send(self, group: int, msg: dict) -> None:
        self.sends.append(self.ctl.isend(msg, dest=self.leaders[group], tag=TAG_TO_LEADER))
        self.sends = [r for r in self.sends if not r.Test()]

    def say(self, line: str) -> None:
        _say(self.opts.folder, line, self.opts.quiet)

    def _handle(self, msg: dict) -> None:
        kind, group = msg["kind"], msg["group"]
        if kind == "ready":
            self.store.record_group(group, msg["ranks"])
            self.idle.append(group)
        elif kind == "progress":
            if self.running.get(group) == msg["job"]:
                self.store.progress(msg["job"], msg["iteration"], msg.get("error"))
        elif kind == "result":
            job_id = self.running.pop(group, None)
            acc = msg.get("accounting", {})
            job = self.store.finish(msg["job"], msg["state"], error=msg.get("error"), **acc)
            self.store.record_group(group, msg["ranks"], acc.get("devices"),
                                    outcome=msg["state"], busy_s=acc.get("wall_s") or 0.0,
                                    bytes_exchanged=acc.get("bytes_exchanged") or 0,
                                    iterations=max(0, (acc.get("iteration") or 0)
                                                   - (acc.get("resumed_from") or 0)))
            self.cancel_sent.discard(msg["job"])
            if job_id is not None:
                self.opts.finished.append(job.to_dict())
            wall = acc.get("wall_s")
            detail = f": {job.error}" if job.error else ""
            self.say(f"job {job.id} ({job.name}) {job.state} on group {group} after "
                     f"{job.iteration} iterations in {wall or 0:.1f} s{detail}")
            self.idle.append(group)
        if kind != "progress":
            self._dispatch()

    def _dispatch(self) -> None:
        while self.idle:
            job = self.store.claim_next(self.idle[0], self.opts.ranks_per_job)
            if job is None:
                return
            group = self.idle.pop(0)
            self.running[group] = job.id
            self.empty_since = None
            resume = " (resuming)" if job.attempts > 1 else ""
            self.say(f"job {job.id} ({job.name}) -> group {group}{resume}")
            self._send(group, {"kind": "job", "job": job.to_dict()})

    def _poll(self) -> None:
        if self.opts.inbox is not None:
            from .inbox import scan_inbox  # noqa: PLC0415

            for line in scan_inbox(self.opts.inbox, self.store, self.opts.template):
                self.say(line)
        for job_id in self.store.cancel_requests():
            for group, running in self.running.items():
                if running == job_id and job_id not in self.cancel_sent:
                    self.cancel_sent.add(job_id)
                    self._send(group, {"kind": "cancel", "job": job_id})
        self._dispatch()
        busy = self.running or len(self.idle) + len(self.stopped) < len(self.leaders)
        if busy or self.store.count("queued"):
            self.empty_since = None
            return
        now = time.monotonic()
        self.empty_since = self.empty_since or now
        if now - self.empty_since >= self.opts.wait_s:
            for group in self.idle:
                self._send(group, {"kind": "stop"})
                self.stopped.add(group)
            self.idle = []
            self.done = len(self.stopped) == len(self.leaders)

    def service(self) -> None:
        """Handle every waiting message; read the database at the poll interval."""
        from mpi4py import MPI  # noqa: PLC0415

        status = MPI.Status()
        while self.ctl.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_TO_COORD, status=status):
            msg = self.ctl.recv(source=status.Get_source(), tag=TAG_TO_COORD)
            self._handle(msg)
        now = time.monotonic()
        if now - self.last_poll >= self.opts.poll_s:
            self.last_poll = now
            self._poll()

    def serve_forever(self, failed: list[BaseException]) -> None:
        """The coordinator thread / rank: service until every group is stopped."""
        try:
            while not self.done:
                self.service()
                time.sleep(NAP_S)
            from mpi4py import MPI  # noqa: PLC0415

            MPI.Request.Waitall(self.sends)
        except BaseException as exc:  # noqa: BLE001 - reported, then the queue ends
            failed.append(exc)
            _fatal(self.ctl, f"queue coordinator: {type(exc).__name__}: {exc}")


def _fatal(world: Any, line: str) -> None:
    print(f"ptychompi: error: {' '.join(line.split())}; restart the queue to resume",
          file=sys.stderr, flush=True)
    time.sleep(0.5)
    world.Abort(1)
