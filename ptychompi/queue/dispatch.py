"""The queue under MPI: a coordinator hands jobs to groups of ``k`` ranks by MPI messages.

The world is split (``Comm.Split``) into groups of ``k`` consecutive ranks. Each group's
leader (its rank 0) asks the coordinator for a job, broadcasts it to its group, the group runs
it with :func:`ptychompi.queue.execute.run_job` on the group communicator and the leader
reports the outcome, which is also its request for the next job.

The coordinator lives on world rank 0 and never holds a device idle: by default it is a light
thread beside rank 0's own jobs (when MPI gives ``MPI_THREAD_MULTIPLE``); ``inline`` serves
the messages between rank 0's iterations instead, and ``rank`` gives the coordinator a rank of
its own (the other ranks form the groups). It reads the queue database only when a group asks
for work and at the poll interval (new jobs, cancellations, the inbox).

Idle ranks wait with a non-blocking test and a short sleep, not in a spinning MPI call, so they
leave the cores to the groups that work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PtychompiError
from .store import QueueError, QueueStore

__all__ = ["QueueOptions", "Coordinator", "run_queue", "check_group_size"]

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


# -------------------------------------------------------------------- worker side
def _wait(test: Callable[[], bool], tick: Callable[[], None]) -> None:
    while not test():
        tick()
        time.sleep(NAP_S)


def _share(group: Any, msg: dict | None, tick: Callable[[], None]) -> dict:
    """The leader's message on every rank of the group (idle ranks wait without spinning)."""
    if group.Get_size() == 1:
        return msg  # type: ignore[return-value]
    req = group.Ibarrier()
    _wait(req.Test, tick)
    return group.bcast(msg, root=0)


def _post(ctl: Any, msg: dict, tick: Callable[[], None]) -> None:
    """A leader's message to the coordinator (non-blocking send: on rank 0 in inline mode the
    same thread has to receive it)."""
    req = ctl.isend(msg, dest=0, tag=TAG_TO_COORD)
    _wait(req.Test, tick)


def _next_message(ctl: Any, tick: Callable[[], None]) -> dict:
    """The leader's next job or stop (stale cancels of finished jobs are dropped)."""
    while True:
        _wait(lambda: ctl.Iprobe(source=0, tag=TAG_TO_LEADER), tick)
        msg = ctl.recv(source=0, tag=TAG_TO_LEADER)
        if msg["kind"] != "cancel":
            return msg


class CancelWatch:
    """Per iteration, whether the coordinator asked to cancel the running job (collective)."""

    def __init__(self, ctl: Any, group: Any, group_id: int, job_id: int,
                 tick: Callable[[], None]) -> None:
        self.ctl, self.group, self.job_id, self.tick = ctl, group, job_id, tick
        self.group_id = group_id
        self.leader = group.Get_rank() == 0
        self.last_progress = time.monotonic()

    def __call__(self, iteration: int, error: float | None) -> bool:
        self.tick()
        flag = False
        if self.leader:
            while self.ctl.Iprobe(source=0, tag=TAG_TO_LEADER):
                msg = self.ctl.recv(source=0, tag=TAG_TO_LEADER)
                flag = flag or (msg["kind"] == "cancel" and msg["job"] == self.job_id)
            now = time.monotonic()
            if now - self.last_progress >= PROGRESS_EVERY_S:
                self.last_progress = now
                _post(self.ctl, {"kind": "progress", "group": self.group_id,
                                 "job": self.job_id, "iteration": iteration, "error": error},
                      self.tick)
        if self.group.Get_size() > 1:
            flag = self.group.bcast(flag, root=0)
        return flag


def _count_gpus() -> list[str] | None:
    """The GPU ids CuPy sees, counted in a child process (this one must not initialise CUDA
    yet); ``None`` without CuPy or when counting fails."""
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec("cupy") is None:
        return None
    try:
        out = subprocess.run([sys.executable, "-c", "import cupy; print(cupy.cuda."
                              "runtime.getDeviceCount())"], capture_output=True,
                             text=True, timeout=120, check=False)
        return [str(i) for i in range(int(out.stdout.strip() or 0))]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def bind_devices(world: Any) -> None:
    """One GPU per rank, node-local world rank mod visible GPUs, whatever the group size.

    ptychompi picks the GPU from the node-local rank of the communicator it is given; for a
    group that would restart at 0 in every group. So each rank sees only its own GPU
    (``CUDA_VISIBLE_DEVICES``) before any CUDA call. CPU ranks get their FFT threads from the
    world ranks on the node (``PTYCHOMPI_WORKERS``) unless already set.
    """
    from ..parallel.node import node_comm  # noqa: PLC0415

    with node_comm(world) as node:
        local, here = node.Get_rank(), node.Get_size()
        if "PTYCHOMPI_WORKERS" not in os.environ:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else (os.cpu_count() or 1)
            os.environ["PTYCHOMPI_WORKERS"] = str(max(1, cores // here))
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            devices = [d for d in visible.split(",") if d.strip()]
        else:
            devices = node.bcast(_count_gpus() if local == 0 else None, root=0)
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[local % len(devices)]


def _worker(world: Any, ctl: Any, group: Any, group_id: int, opts: QueueOptions,
            tick: Callable[[], None]) -> None:
    from .execute import run_job  # noqa: PLC0415

    leader = group.Get_rank() == 0
    ranks = group.allgather(world.Get_rank())
    if leader:
        _post(ctl, {"kind": "ready", "group": group_id, "ranks": ranks}, tick)
    while True:
        msg = _next_message(ctl, tick) if leader else None
        msg = _share(group, msg, tick)
        if msg["kind"] == "stop":
            return
        job = msg["job"]
        watch = CancelWatch(ctl, group, group_id, job["id"], tick)
        outcome = run_job(job, world, group, opts, watch)
        if leader:
            _post(ctl, {"kind": "result", "group": group_id, "ranks": ranks, "job": job["id"],
                        **outcome}, tick)


def _noop() -> None:
    return None


def run_queue(opts: QueueOptions, world: Any) -> None:
    """Run the queue on every rank of ``world`` until it is empty (collective)."""
    from mpi4py import MPI  # noqa: PLC0415

    from ..api import agree  # noqa: PLC0415

    size, rank = world.Get_size(), world.Get_rank()
    mode = opts.coordinator
    if mode == "auto":
        mode = "thread" if MPI.Query_thread() == MPI.THREAD_MULTIPLE else "inline"
    if mode == "thread" and MPI.Query_thread() != MPI.THREAD_MULTIPLE:
        raise PtychompiError("--coordinator thread needs MPI_THREAD_MULTIPLE, which this MPI "
                             "does not give; use --coordinator inline")
    n_groups = check_group_size(size, opts.ranks_per_job, mode)
    error: BaseException | None = None
    lock = None
    if rank == 0:
        try:
            from ..outlock import lock_output  # noqa: PLC0415

            QueueStore(opts.folder).close()  # a queue at all, before anything is written
            lock = lock_output(opts.folder)  # one queue run per folder
            with QueueStore(opts.folder) as store:
                requeued, failed = store.recover(opts.max_attempts)
            if requeued:
                _say(opts.folder, f"restart: job(s) {', '.join(map(str, requeued))} were "
                     "running and are queued again (they resume from their checkpoints)",
                     opts.quiet)
            for job_id in failed:
                _say(opts.folder, f"job {job_id} failed: interrupted {opts.max_attempts} times",
                     opts.quiet)
        except Exception as exc:  # noqa: BLE001 - reported on every rank
            error = exc
    agree(world if size > 1 else None, error)
    bind_devices(world)
    first = 1 if mode == "rank" else 0
    k = opts.ranks_per_job
    color = MPI.UNDEFINED if rank < first else (rank - first) // k
    group = world.Split(color, rank)
    ctl = world.Dup()
    leaders = {g: first + g * k for g in range(n_groups)}
    if rank == 0:
        _say(opts.folder, f"{size} rank(s): {n_groups} group(s) of {k}, coordinator {mode}",
             opts.quiet)
    coordinator = Coordinator(ctl, leaders, opts) if rank == 0 else None
    thread = None
    failed: list[BaseException] = []
    tick = _noop
    if coordinator is not None and mode == "thread":
        thread = threading.Thread(target=coordinator.serve_forever, args=(failed,),
                                  name="ptychompi-queue-coordinator", daemon=True)
        thread.start()
    elif coordinator is not None and mode == "inline":
        tick = coordinator.service
    try:
        if coordinator is not None and mode == "rank":
            coordinator.serve_forever(failed)
        else:
            _worker(world, ctl, group, color, opts, tick)
            if coordinator is not None and mode == "inline":
                while not coordinator.done:  # the other groups may still be busy
                    coordinator.service()
                    time.sleep(NAP_S)
                MPI.Request.Waitall(coordinator.sends)
        if thread is not None:
            thread.join()
    finally:
        if group != MPI.COMM_NULL:
            group.Free()
    ctl.Barrier()
    ctl.Free()
    if coordinator is not None:
        coordinator.store.close()
    if lock is not None:
        lock.release()
    if failed:
        raise QueueError(f"the queue coordinator failed: {failed[0]}")
