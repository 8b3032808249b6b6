"""The groups' side of the queue: leaders ask the coordinator for jobs and broadcast them,
idle ranks wait without spinning, cancellation reaches a running job, GPUs are bound per
node-local rank."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .coordinator import NAP_S, PROGRESS_EVERY_S, TAG_TO_COORD, TAG_TO_LEADER, QueueOptions


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
    from ...parallel.node import node_comm  # noqa: PLC0415

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
