"""One queue job on one group: build, resume from a checkpoint, iterate, write, account.

The same steps as ``ptychompi run`` (it reuses the runner's space check, checkpoints, live
snapshots, result and exports, e-mail), on the group's communicator. What ends the job and
what ends the whole queue:

* a problem every rank of the group sees alike (bad config, missing or unreadable file, NaN
  frames, divergence, anything the collective checks agree on, a failing result write): the
  job is failed with its one-line reason and the group asks for its next job;
* an unexpected exception on some ranks of a group of several, in the middle of the
  iterations, where the other ranks may wait inside a collective: the whole queue ends through
  ``MPI_Abort`` (a restart re-queues the job, which resumes from its checkpoint). In a group of
  one rank there is no collective to hang in, so that job is failed instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import PtychompiError
from ...parallel.exchange import one_line

__all__ = ["run_job"]

log = logging.getLogger("ptychompi")


def _notify_settings(output: Any, job: dict, opts: Any) -> None:
    """Per-job e-mail: the job's own ``output.notify``; ``--email`` of ``queue add`` as its
    recipient; else the queue's ``--notify`` settings."""
    from ...config import EmailConfig  # noqa: PLC0415

    notify = output.notify
    if job.get("email"):
        base = notify.email or opts.notify or EmailConfig()
        notify.email = dataclasses.replace(base, to=[job["email"]])
    elif notify.email is None and opts.notify is not None:
        notify.email = opts.notify


def _output(job: dict, opts: Any) -> Any:
    """The job's output settings (for the e-mail of a job that failed before it was built)."""
    from ...config import OutputConfig, config_from_dict  # noqa: PLC0415

    try:
        output = config_from_dict({"output": job["config"].get("output") or {}}).output
    except PtychompiError:
        output = OutputConfig()
    output.directory = job["output_dir"]
    _notify_settings(output, job, opts)
    return output


def _build(job: dict, comm: Any | None, rank: int, opts: Any,
           held: list[Any]) -> tuple[Any, Any]:
    """The job's Reconstruction on the group (collective); its output folder is locked (rank
    0, into ``held``) as ``ptychompi run`` locks its own."""
    from ...config import config_from_dict  # noqa: PLC0415
    from ..api import Reconstruction, agree  # noqa: PLC0415
    from ..monitor import setup_logging  # noqa: PLC0415
    from ..runner import _claim  # noqa: PLC0415

    config, out = job["config"], job["output_dir"]
    error: BaseException | None = None
    cfg = None
    try:
        if "ptychopy" not in config:
            cfg = config_from_dict(config)
            cfg.output.directory = out
        if rank == 0:
            _claim(out, held)
    except Exception as exc:  # noqa: BLE001 - agreed below
        error = exc
    agree(comm, error)
    setup_logging(out, rank, quiet=True)
    log.info("queue job %d (%s) on %d rank(s)", job["id"], job["name"],
             1 if comm is None else comm.Get_size())
    options = None
    if cfg is None:
        from ...compat.ptychopy import reconstruction_from_cmdstr  # noqa: PLC0415

        recon, options = reconstruction_from_cmdstr(config["ptychopy"], comm=comm)
        recon.config.output.directory = out
    else:
        recon = Reconstruction(cfg, comm)
    output = recon.config.output
    if not output.checkpoint_every and opts.checkpoint_every:
        output.checkpoint_every = opts.checkpoint_every
    _notify_settings(output, job, opts)
    return recon, options


def _has_checkpoint(out: Path, group: Any) -> bool:
    from ..checkpoint import RESULT_NAME  # noqa: PLC0415

    have = (out / RESULT_NAME).is_file()
    return bool(group.bcast(have, root=0)) if group.Get_size() > 1 else have


def run_job(job: dict, world: Any, group: Any, opts: Any,
            watch: Callable[[int, float | None], bool]) -> dict:
    """Run ``job`` on ``group`` (collective); returns its outcome (meaningful on the leader):
    ``state`` (done, failed, cancelled), ``error`` and ``accounting``."""
    from ...parallel.exchange import abort_on_error  # noqa: PLC0415
    from ..checkpoint import resume, write_checkpoint  # noqa: PLC0415
    from ..live import LiveWriter  # noqa: PLC0415
    from ..monitor import close_logging  # noqa: PLC0415
    from ..notify import notify_run_end  # noqa: PLC0415
    from ..runner import _check_space, _finish  # noqa: PLC0415

    t0 = time.perf_counter()
    size, rank = group.Get_size(), group.Get_rank()
    comm = group if size > 1 else None
    out = Path(job["output_dir"])
    recon = live = None
    state, error, resumed_from, prov = "done", None, None, {}
    phase = "setup"
    held: list[Any] = []
    try:
        recon, options = _build(job, comm, rank, opts, held)
        cfg = recon.config
        _check_space(recon)
        if _has_checkpoint(out, group):
            resumed_from = resume(recon, out)
            log.info("resumed at iteration %d", resumed_from)
        total, every = cfg.algorithm.iterations, cfg.output.checkpoint_every
        live = LiveWriter(out, cfg.output.live_every, total, rank)
        phase = "iterations"
        while recon.iteration < total:
            metrics = recon.step()
            if every and recon.iteration % every == 0 and recon.iteration < total:
                write_checkpoint(recon, out)
            if live.due(recon.iteration):
                live.update(recon)
            if watch(recon.iteration, metrics["error"]):
                state, error = "cancelled", f"cancelled at iteration {recon.iteration}"
                if every:
                    write_checkpoint(recon, out)  # a retry continues from here
                break
        phase = "finish"
        if state == "done":
            prov = _finish(recon, out, None) or {}
            if options is not None:
                from ...compat.ptychopy import write_outputs  # noqa: PLC0415

                write_outputs(recon, options)
        live.finish(recon, state if state == "done" else "cancelled")
    except Exception as exc:  # noqa: BLE001 - sorted below
        agreed = isinstance(exc, PtychompiError) or (phase == "finish" and
                                                     isinstance(exc, OSError))
        if not agreed and size > 1:
            abort_on_error(world, exc)  # a fault inside a collective ends the queue
        state, error = "failed", one_line(exc)
        if live is not None and recon is not None:
            live.finish(recon, "failed")
        if rank == 0:
            at = recon.iteration if recon is not None and recon.engine is not None else 0
            notify_run_end(recon.config.output if recon is not None else _output(job, opts),
                           f"ptychompi queue job {job['id']} ({job['name']}) failed at "
                           f"iteration {at}: {error}", False)
    finally:
        iteration = recon.iteration if recon is not None and recon.engine is not None else 0
        history = recon.history if recon is not None else []
        if recon is not None:
            recon.close()
        for lock in held:
            lock.release()
        close_logging()
    accounting = {"wall_s": time.perf_counter() - t0, "iteration": iteration,
                  "final_error": float(history[-1]["error"]) if history else None,
                  "resumed_from": resumed_from}
    if prov:
        accounting["bytes_exchanged"] = int(sum(prov.get("bytes_sent", [])))
        accounting["devices"] = list(prov.get("devices", []))
        accounting["device"] = ",".join(prov.get("devices", []))
        accounting["result_path"] = str(out / "result.h5")
    return {"state": state, "error": error, "accounting": accounting}
