"""``ptychompi run``: a reconstruction under MPI with logging, checkpoints, results and exports.

Every rank runs this; rank 0 alone prints, logs to file and writes. Problems found before the
iterations (bad config or data on any rank) are agreed on collectively and reported once by
rank 0; an exception in the middle of an iteration, where the other ranks may be waiting in a
collective, ends the whole job through ``MPI_Abort`` with one line naming the rank.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, config_from_dict, load_config
from ..config.engines import FLAT_KEYS, config_deprecations, flat_key_note
from ..errors import ConfigError, PtychompiError, os_reason
from .api import Reconstruction, agree, collective
from .checkpoint import resume, write_checkpoint
from .outlock import OutputLock, lock_output, remove_stale_temporaries
from .signals import Guard, install

log = logging.getLogger("ptychompi")


def _world() -> Any | None:
    try:
        from mpi4py import MPI  # noqa: PLC0415
    except ImportError:  # pragma: no cover - mpi4py is a dependency
        return None
    return MPI.COMM_WORLD


def apply_overrides(cfg: Config, pairs: list[str]) -> Config:
    """``--set section.key=value`` overrides (YAML values), validated like the file."""
    if not pairs:
        return cfg
    values = cfg.to_dict()
    for pair in pairs:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise ConfigError(f"--set {pair!r}: use section.key=value, e.g. "
                              "algorithm.iterations=50")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({problem}); "
                              "quote strings and close brackets, e.g. "
                              "data.scan_dims=[8,8]") from None
        *sections, last = key.split(".")
        if sections == ["algorithm"] and last in FLAT_KEYS:  # a deprecated flat engine key
            flat_key_note(last)
            sections, last = ["algorithm", FLAT_KEYS[last][0]], FLAT_KEYS[last][1]
        node = values
        for s in sections:
            node = node.setdefault(s, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r}: {s} is not a section")
        node[last] = value
    return config_from_dict(values)


def _build(args: argparse.Namespace, cfg: Config | None,
           comm: Any) -> tuple[Reconstruction, Any]:
    """The reconstruction from the loaded config or a ptychopy command string."""
    if args.ptychopy:
        from ..compat.ptychopy import reconstruction_from_cmdstr  # noqa: PLC0415

        if args.set:
            raise ConfigError("--set does not combine with --ptychopy; put the parameter in "
                              "the command string")
        if getattr(args, "follow", False):
            raise ConfigError("--follow does not combine with --ptychopy; give a config file")
        return reconstruction_from_cmdstr(args.ptychopy, comm=comm)
    if getattr(args, "follow", False) or cfg.data.follow.enabled:
        from .follow import build_follow  # noqa: PLC0415

        return build_follow(cfg, comm, bool(args.resume)), None
    return Reconstruction(cfg, comm), None


def _load(args: argparse.Namespace) -> Config:
    if not args.config:
        raise ConfigError("give a config file (ptychompi run scan.yaml) or --ptychopy CMDSTR")
    return apply_overrides(load_config(args.config), args.set)


def _check_space(recon: Reconstruction) -> None:
    """Free space for the result and checkpoints, from the real sizes. Collective."""
    from ..io.export import estimate_export_bytes  # noqa: PLC0415
    from ..io.results import check_output_dir, estimate_result_bytes  # noqa: PLC0415

    error = None
    cfg = recon.config
    # every rank's checkpoint state (the engine's own, e.g. DM's exit waves, included)
    state = recon.engine.state_nbytes() if cfg.output.checkpoint_every else 0
    if recon.comm is not None:  # not through the exchange: no run statistics
        state = recon.comm.allreduce(state)
    if recon.rank == 0:
        layout = recon.layout
        m, k = layout.frame, cfg.algorithm.probe_modes
        exports = estimate_export_bytes(layout.object_shape, (k, m, m), cfg.output.formats)
        try:  # twice the result and checkpoints (old and new coexist), once every export
            check_output_dir(cfg.output.directory, estimate_result_bytes(
                layout.object_shape, (k, m, m), layout.n_frames, cfg.algorithm.iterations,
                state) + (exports + 1) // 2, _replaced_bytes(Path(cfg.output.directory)))
        except Exception as exc:  # noqa: BLE001 - any failure is reported by every rank below
            error = exc
    agree(recon.comm, error)


def _replaced_bytes(out: Path) -> int:
    """Bytes of the files a run in ``out`` rewrites (result, checkpoints, exports)."""
    files = [out / "result.h5", out / "checkpoint.h5", *out.glob("result_*"),
             *(out / "checkpoint").glob("rank*.h5")]
    total = 0
    for f in files:
        try:
            total += f.stat().st_size
        except OSError:
            continue
    return total


def _finish(recon: Reconstruction, out: Path, stem: str | None) -> dict:
    """Write result and exports (rank 0), print the summary, send the e-mail."""
    from ..io.export import export_arrays  # noqa: PLC0415
    from ..io.results import write_result  # noqa: PLC0415
    from .monitor import format_summary  # noqa: PLC0415
    from .notify import notify_run_end  # noqa: PLC0415

    cfg = recon.config
    data = recon.result_data()  # collective; None on ranks other than 0
    written: list[str] = []

    def write() -> None:  # rank 0; a full disk here is agreed on, so no rank is left waiting
        if data is None:
            return
        try:
            write_result(str(out / "result.h5"), data)
        except OSError as exc:
            raise PtychompiError(f"cannot write {out / 'result.h5'} ({os_reason(exc)}); "
                                 "no partial file is left: free space and continue from the "
                                 "last checkpoint with --resume") from None
        written.append(str(out / "result.h5"))
        todo = [fmt for fmt in cfg.output.formats if fmt != "hdf5"]
        for i, fmt in enumerate(todo):
            try:
                written.extend(export_arrays(data.object, data.probe, data.pixel_size, fmt,
                                             str(out), stem or "result", data.positions,
                                             data.refined_positions))
            except PtychompiError as exc:
                raise PtychompiError(
                    f"{exc} (result.h5 is complete): `ptychompi export {out / 'result.h5'} "
                    f"--to FORMAT` for {', '.join(todo[i:])}") from None

    collective(recon.comm, write)
    if data is None:
        return {}
    prov = data.provenance
    summary = format_summary({**prov, "error": list(data.error), "output": str(out)})
    print(summary, file=sys.stderr)
    log.debug("run summary\n%s", summary)
    previews = [p for p in written if p.endswith(".png")]
    notify_run_end(cfg.output, summary, True, previews)
    return prov


def _claim(directory: str, held: list[OutputLock]) -> None:
    """Rank 0: the folder writable and locked for this run, temporaries of killed runs gone."""
    from ..io.results import check_output_dir  # noqa: PLC0415

    check_output_dir(directory, 0)
    held.append(lock_output(directory))
    for stale in remove_stale_temporaries(directory):
        log.debug("removed %s, left by an interrupted run", stale)


def _check_resume(recon: Reconstruction, out: Path, start: int) -> None:
    """Refuse a --resume that has nothing to run or would replace a further result."""
    total = recon.config.algorithm.iterations
    fix = (f"raise algorithm.iterations (e.g. --set algorithm.iterations={start + 10}) to "
           f"continue; {out / 'result.h5'} is left as it is")
    if start >= total:
        raise ConfigError(f"--resume: the checkpoint is at iteration {start} and "
                          f"algorithm.iterations is {total}, so there is nothing to run; {fix}")
    result = out / "result.h5"
    if recon.rank != 0 or not result.is_file():
        return
    from ..io.results import read_result  # noqa: PLC0415

    try:
        done = int(read_result(result).provenance.get("iterations_done", 0))
    except PtychompiError:
        return  # an unreadable result is no finished result
    if done >= total:
        raise ConfigError(f"--resume: {result} already holds a finished run of {done} "
                          f"iterations, at least the {total} asked for; {fix}")


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``ptychompi run`` on every rank; returns the exit code.

    SIGINT/SIGTERM to any rank end the whole run (``ptychompi.app.signals``); the output folder
    is locked for the run's duration (``ptychompi.app.outlock``).
    """
    comm = _world()
    size = 1 if comm is None else comm.Get_size()
    restore = install(comm if size > 1 else None)
    held: list[OutputLock] = []
    try:
        return _run(args, comm, held, restore)
    finally:
        for lock in held:
            lock.release()
        restore()


def _run(args: argparse.Namespace, comm: Any, held: list[OutputLock], guard: Guard) -> int:
    from ..parallel.exchange import abort_on_error  # noqa: PLC0415
    from .monitor import Progress, close_logging, setup_logging  # noqa: PLC0415

    size = 1 if comm is None else comm.Get_size()
    rank = 0 if comm is None else comm.Get_rank()
    comm_arg = comm if size > 1 else None
    error: BaseException | None = None
    cfg: Config | None = None
    notes: list[str] = []
    try:
        if not args.ptychopy:
            with config_deprecations() as notes:
                cfg = _load(args)
            if rank == 0:  # writable and ours before reading any data; space once sizes known
                _claim(cfg.output.directory, held)
    except Exception as exc:  # noqa: BLE001 - any failure is reported by every rank below
        error = exc
    agree(comm_arg, error)
    setup_logging(cfg.output.directory if cfg else None, rank, quiet=args.quiet,
                  verbose=args.verbose)
    for line in notes if rank == 0 else ():
        log.warning(line)
    try:
        recon, ptychopy_options = _build(args, cfg, comm_arg)
    except PtychompiError:
        raise  # agreed on, the same on every rank
    except Exception as exc:  # noqa: BLE001 - one rank failed in the set-up collectives
        abort_on_error(comm_arg, exc)  # one line; MPI_Abort on several ranks
    cfg = recon.config
    out = Path(cfg.output.directory)
    if args.ptychopy:
        collective(comm_arg, lambda: _claim(str(out), held) if rank == 0 else None)
    _check_space(recon)
    log.info("ptychompi %s: %s on %d rank(s), %d frames of %dx%d, object %s, pixel %.3g m",
             cfg.algorithm.name, recon.layout.source_path, size, recon.layout.n_frames,
             recon.layout.frame, recon.layout.frame, recon.layout.object_shape,
             recon.layout.pixel_size_m)
    if args.resume:
        start = resume(recon, out)
        collective(comm_arg, _check_resume, recon, out, start)
        log.info("resumed at iteration %d", start)
    total = cfg.algorithm.iterations
    progress = Progress(total, every=cfg.output.log_every,
                        enabled=rank == 0 and not args.quiet, start=recon.iteration)
    every = cfg.output.checkpoint_every
    from .live import LiveWriter  # noqa: PLC0415

    # rank 0 creates live/ (a full disk fails here): agreed, so no rank waits alone
    live = collective(comm_arg, LiveWriter, out, cfg.output.live_every, total, rank)
    t0 = time.perf_counter()
    try:
        while recon.iteration < total:
            metrics = recon.step()
            guard.check()  # a signalled rank other than 0 goes no further
            progress.note = getattr(recon, "rows_note", "")  # follow: rows arrived/planned
            progress.update(recon.iteration, metrics["error"], metrics["seconds"])
            log.debug("iteration %d error %.6e %.3f s", recon.iteration, metrics["error"],
                      metrics["seconds"])
            if every and recon.iteration % every == 0 and recon.iteration < total:
                write_checkpoint(recon, out)
            if live.due(recon.iteration):
                try:
                    live.update(recon)  # collective: assembles the object
                except OSError as exc:  # rank 0's optional files: the run goes on
                    log.warning("live snapshot not written (%s)", os_reason(exc))
    except PtychompiError as exc:
        progress.close()
        live.finish(recon, "failed")
        if rank == 0:
            from .notify import notify_run_end  # noqa: PLC0415

            notify_run_end(cfg.output, f"ptychompi run failed at iteration "
                           f"{recon.iteration}: {exc}", False)
        recon.close()  # its backend's threads and FFT plans
        raise  # raised identically on every rank (errors are allreduced)
    except Exception as exc:  # one rank failed mid-collective (logged with its traceback)
        progress.close()
        log.debug("unexpected error at iteration %d", recon.iteration, exc_info=True)
        abort_on_error(comm_arg, exc)  # one line; MPI_Abort on several ranks
    progress.close()
    log.info("%d iterations in %.1f s", total, time.perf_counter() - t0)
    _finish(recon, out, None)
    live.finish(recon, "done")
    if ptychopy_options is not None:
        from ..compat.ptychopy import write_outputs  # noqa: PLC0415

        write_outputs(recon, ptychopy_options)  # data/<jobID>_object_0.csv as ptychopy does
    recon.close()
    close_logging()
    return 0
