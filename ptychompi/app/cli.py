"""The ``ptychompi`` command: parses arguments, then calls the API. Errors are one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import PtychompiError


def _cmd_config(args: argparse.Namespace) -> int:
    from ..config import default_yaml, load_config  # noqa: PLC0415

    if args.check:
        cfg = load_config(args.check)
        if not cfg.data.path:  # a template: valid, but `run` needs the scan
            print(f"{args.check}: valid as a template; set data.path (a .cxi file or APS row "
                  "files) before `ptychompi run`")
            return 0
        print(f"{args.check}: valid")
        return 0
    print(default_yaml(), end="")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from ..sim.simulate import simulate_to_files  # noqa: PLC0415

    paths = simulate_to_files(
        args.out, frame=args.frame, grid=args.grid, step_px=args.step_px,
        probe_diameter_px=args.probe_diameter_px, photons=args.photons, seed=args.seed,
        probe_modes=args.probe_modes)
    for p in paths:
        print(f"wrote {p}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    """Each file's summary; a file that cannot be read is one error line, the rest go on."""
    from .summary import inspect_file  # noqa: PLC0415

    failed = 0
    for i, path in enumerate(args.file):
        try:
            text = inspect_file(path)
        except PtychompiError as exc:
            print(f"ptychompi: error: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(("\n" if i else "") + text, flush=True)
    return 2 if failed else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_cli  # noqa: PLC0415

    return run_cli(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from ..io.export import export_result  # noqa: PLC0415

    for p in export_result(args.result, args.to, args.out):
        print(f"wrote {p}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from .submit import submit_cli  # noqa: PLC0415

    return submit_cli(args)


def _cmd_gui(args: argparse.Namespace) -> int:
    from .gui.server import gui_cli  # noqa: PLC0415

    return gui_cli(args)


def _cmd_queue(args: argparse.Namespace) -> int:
    from .queue.cli import queue_cli  # noqa: PLC0415

    return queue_cli(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptychompi", description="MPI + GPU ptychography")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("config", help="print the default config, or check one")
    c.add_argument("--defaults", action="store_true", help="print the commented defaults")
    c.add_argument("--check", metavar="CONFIG", help="validate a config file")
    c.set_defaults(func=_cmd_config)

    s = sub.add_parser("simulate", help="write a simulated scan (CXI) and its ground truth")
    s.add_argument("--out", required=True, help="output .cxi path")
    s.add_argument("--frame", type=int, default=128, help="frame size in pixels")
    s.add_argument("--grid", type=int, default=30, help="positions per side of the raster")
    s.add_argument("--step-px", type=float, default=15.0, help="raster step in object pixels")
    s.add_argument("--probe-diameter-px", type=float, default=40.0, help="probe diameter")
    s.add_argument("--photons", type=float, default=1e6, help="photons per frame")
    s.add_argument("--probe-modes", type=int, default=1, help="incoherent probe modes")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.set_defaults(func=_cmd_simulate)

    i = sub.add_parser("inspect", help="summarise scan, MDA or result files")
    i.add_argument("file", nargs="+")
    i.set_defaults(func=_cmd_inspect)

    r = sub.add_parser("run", help="reconstruct (under mpiexec for several ranks)")
    r.add_argument("config", nargs="?", help="YAML config")
    r.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    r.add_argument("--follow", action="store_true",
                   help="reconstruct while the scan is written: APS row files or a CXI "
                   "file under SWMR (data.follow)")
    r.add_argument("--ptychopy", metavar="CMDSTR", help="a ptychopy command string instead")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. algorithm.iterations=50")
    r.add_argument("--quiet", action="store_true", help="only errors on the console")
    r.add_argument("--verbose", action="store_true", help="debug output on the console")
    r.set_defaults(func=_cmd_run)

    e = sub.add_parser("export", help="export a result file")
    e.add_argument("result")
    e.add_argument("--to", required=True, choices=("tiff", "png", "csv"))
    e.add_argument("--out", default=None, help="output folder (default: beside the result)")
    e.set_defaults(func=_cmd_export)

    b = sub.add_parser("submit", help="render and submit a SLURM or PBS job")
    b.add_argument("config", nargs="?", help="YAML config (or --queue DIR --ranks-per-job K)")
    b.add_argument("--scheduler", required=True, choices=("slurm", "pbs"))
    b.add_argument("--nodes", type=int, default=1)
    b.add_argument("--gpus-per-node", type=int, default=4)
    b.add_argument("--time", default="01:00:00", help="HH:MM:SS")
    b.add_argument("--account", default=None)
    b.add_argument("--queue", default=None,
                   help="with a config: partition (SLURM) or queue (PBS); with "
                        "--ranks-per-job: the ptychompi queue folder to run")
    b.add_argument("--partition", default=None, help="partition (SLURM) or queue (PBS)")
    b.add_argument("--ranks-per-job", type=int, default=None, metavar="K",
                   help="run the queue folder --queue in this allocation, K ranks per job")
    b.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="queue: checkpoint jobs without their own checkpoints every N "
                        "iterations (a resubmitted queue resumes them)")
    b.add_argument("--notify", default=None, metavar="YAML",
                   help="queue: config whose output.notify.email gets the summary")
    b.add_argument("--setup", default=None, help="shell lines to activate the environment")
    b.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    b.set_defaults(func=_cmd_submit)

    from .queue.cli import add_queue_arguments  # noqa: PLC0415

    q = sub.add_parser("queue", help="batch queue: many scans on groups of MPI ranks")
    add_queue_arguments(q)
    q.set_defaults(func=_cmd_queue)

    g = sub.add_parser("gui", help="web GUI: parameters, queue, live view, results "
                       "(needs the gui extra)")
    g.add_argument("--port", type=int, default=8050, help="TCP port (0 = any free one)")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: this machine only)")
    g.add_argument("--root", default=".", help="folder the GUI may read and write under")
    g.add_argument("--queue", default=None, help="queue folder (default: ROOT/queue)")
    g.set_defaults(func=_cmd_gui)
    return p


def _rank() -> int:
    """This process's MPI rank when MPI is running, else 0 (errors print on rank 0 only)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return 0
    return mpi.COMM_WORLD.Get_rank()


def _quiet_stdout() -> None:
    """The reader of our output went away (``| head``): send the rest nowhere, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    from .signals import Interrupted, message  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PtychompiError as exc:
        if _rank() == 0:
            print(f"ptychompi: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except Interrupted as exc:  # one rank: a several-rank run aborts in the handler
        print(message(exc.signum), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ptychompi: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
