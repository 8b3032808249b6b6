"""The queue under MPI: a coordinator hands jobs to groups of ``k`` ranks by MPI messages.

The world is split (``Comm.Split``) into groups of ``k`` consecutive ranks. Each group's
leader (its rank 0) asks the coordinator for a job, broadcasts it to its group, the group runs
it with :func:`ptychompi.app.queue.execute.run_job` on the group communicator and the leader
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

import threading
import time
from typing import Any

from ...errors import PtychompiError
from .coordinator import NAP_S, Coordinator, QueueOptions, _say, check_group_size
from .store import QueueError, QueueStore
from .worker import _noop, _worker, bind_devices

__all__ = ["QueueOptions", "Coordinator", "run_queue", "check_group_size"]


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
