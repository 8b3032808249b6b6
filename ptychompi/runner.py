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

import numpy as np
import yaml

from .api import Reconstruction, agree
from .checkpoint import resume, write_checkpoint
from .config import Config, config_from_dict, load_config
from .errors import ConfigError, PtychompiError

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
        *sections, last = key.split(".")
        node = values
        for s in sections:
            node = node.setdefault(s, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r}: {s} is not a section")
        node[last] = yaml.safe_load(raw)
    return config_from_dict(values)


def _build(args: argparse.Namespace, cfg: Config | None,
           comm: Any) -> tuple[Reconstruction, Any]:
    """The reconstruction from the loaded config or a ptychopy command string."""
    if args.ptychopy:
        from .compat.ptychopy import reconstruction_from_cmdstr  # noqa: PLC0415

        if args.set:
            raise ConfigError("--set does not combine with --ptychopy; put the parameter in "
                              "the command string")
        return reconstruction_from_cmdstr(args.ptychopy, comm=comm)
    return Reconstruction(cfg, comm), None


def _load(args: argparse.Namespace) -> Config:
    if not args.config:
        raise ConfigError("give a config file (ptychompi run scan.yaml) or --ptychopy CMDSTR")
    return apply_overrides(load_config(args.config), args.set)


def _check_space(recon: Reconstruction) -> None:
    """Free space for the result and checkpoints, from the real sizes. Collective."""
    from .io.results import check_output_dir, estimate_result_bytes  # noqa: PLC0415

    error = None
    if recon.rank == 0:
        cfg, layout = recon.config, recon.layout
        m, k = layout.frame, cfg.algorithm.probe_modes
        state = 0
        if cfg.output.checkpoint_every:
            state = int(np.prod(layout.object_shape)) * 8
            if cfg.algorithm.name == "dm":  # every position's exit waves
                state += layout.n_frames * k * m * m * 8
        try:
            check_output_dir(cfg.output.directory, estimate_result_bytes(
                layout.object_shape, (k, m, m), layout.n_frames, cfg.algorithm.iterations,
                state))
        except Exception as exc:  # reported by every rank below
            error = exc
    agree(recon.comm, error)


def _finish(recon: Reconstruction, out: Path, stem: str | None) -> dict:
    """Write result and exports (rank 0), print the summary, send the e-mail."""
    from .io.export import export_arrays  # noqa: PLC0415
    from .monitor import format_summary  # noqa: PLC0415
    from .notify import notify_run_end  # noqa: PLC0415

    cfg = recon.config
    data = recon.save(str(out / "result.h5"))
    if recon.rank != 0:
        return {}
    written = [str(out / "result.h5")]
    for fmt in cfg.output.formats:
        if fmt != "hdf5":
            written += export_arrays(data.object, data.probe, data.pixel_size, fmt, str(out),
                                     stem or "result")
    prov = data.provenance
    summary = format_summary({**prov, "error": list(data.error), "output": str(out)})
    print(summary, file=sys.stderr)
    log.debug("run summary\n%s", summary)
    previews = [p for p in written if p.endswith(".png")]
    notify_run_end(cfg.output, summary, True, previews)
    return prov


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``ptychompi run`` on every rank; returns the exit code."""
    from .monitor import Progress, close_logging, setup_logging  # noqa: PLC0415
    from .parallel.exchange import abort_on_error  # noqa: PLC0415

    comm = _world()
    size = 1 if comm is None else comm.Get_size()
    rank = 0 if comm is None else comm.Get_rank()
    comm_arg = comm if size > 1 else None
    error: BaseException | None = None
    cfg: Config | None = None
    try:
        if not args.ptychopy:
            cfg = _load(args)
            if rank == 0:  # writable before reading any data; free space once sizes are known
                from .io.results import check_output_dir  # noqa: PLC0415

                check_output_dir(cfg.output.directory, 0)
    except Exception as exc:
        error = exc
    agree(comm_arg, error)
    setup_logging(cfg.output.directory if cfg else None, rank, quiet=args.quiet,
                  verbose=args.verbose)
    recon, ptychopy_options = _build(args, cfg, comm_arg)
    cfg = recon.config
    out = Path(cfg.output.directory)
    if args.ptychopy and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    _check_space(recon)
    log.info("ptychompi %s: %s on %d rank(s), %d frames of %dx%d, object %s, pixel %.3g m",
             cfg.algorithm.name, recon.layout.source_path, size, recon.layout.n_frames,
             recon.layout.frame, recon.layout.frame, recon.layout.object_shape,
             recon.layout.pixel_size_m)
    if args.resume:
        start = resume(recon, out)
        log.info("resumed at iteration %d", start)
    total = cfg.algorithm.iterations
    progress = Progress(total, every=cfg.output.log_every,
                        enabled=rank == 0 and not args.quiet, start=recon.iteration)
    every = cfg.output.checkpoint_every
    from .live import LiveWriter  # noqa: PLC0415

    live = LiveWriter(out, cfg.output.live_every, total, rank)
    t0 = time.perf_counter()
    try:
        while recon.iteration < total:
            metrics = recon.step()
            progress.update(recon.iteration, metrics["error"], metrics["seconds"])
            log.debug("iteration %d error %.6e %.3f s", recon.iteration, metrics["error"],
                      metrics["seconds"])
            if every and recon.iteration % every == 0 and recon.iteration < total:
                write_checkpoint(recon, out)
            if live.due(recon.iteration):
                live.update(recon)  # collective: assembles the object
    except PtychompiError as exc:
        progress.close()
        live.finish(recon, "failed")
        if rank == 0:
            from .notify import notify_run_end  # noqa: PLC0415

            notify_run_end(cfg.output, f"ptychompi run failed at iteration "
                           f"{recon.iteration}: {exc}", False)
        raise  # raised identically on every rank (errors are allreduced)
    except Exception as exc:  # noqa: BLE001 - one rank failed mid-collective
        progress.close()
        if size > 1:
            abort_on_error(comm, exc)
        raise
    progress.close()
    log.info("%d iterations in %.1f s", total, time.perf_counter() - t0)
    _finish(recon, out, None)
    live.finish(recon, "done")
    if ptychopy_options is not None:
        from .compat.ptychopy import write_outputs  # noqa: PLC0415

        write_outputs(recon, ptychopy_options)  # data/<jobID>_object_0.csv as ptychopy does
    recon.close()
    close_logging()
    return 0
