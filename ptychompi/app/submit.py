"""``ptychompi submit``: render a SLURM or PBS job (one MPI rank per GPU) and submit it.

The templates are ``jobscripts/{slurm,pbs}.sh.in`` (``string.Template`` placeholders), found
inside the installed package (``ptychompi/jobscripts``) or in a source checkout.

Nothing a user or a file supplies reaches the script unchecked: paths are ``shlex.quote``-d
where the shell reads them and refused when they hold a newline or another control character
(a comment or directive line could otherwise end and a command begin); account and queue
names and the wall time must match strict patterns; the job name is reduced to safe
characters. ``--setup`` is the exception by design: it is shell text the submitting user
writes for their own job.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from string import Template

from ..config import load_config
from ..errors import PtychompiError

__all__ = ["render_job", "submit_cli", "template_text", "SCHEDULERS"]

SCHEDULERS = {"slurm": "sbatch", "pbs": "qsub"}
_TIME = re.compile(r"^(\d{1,4}):([0-5]\d):([0-5]\d)$")
_NAME = re.compile(r"^[A-Za-z0-9_.@:+-]+$")


def template_text(scheduler: str) -> str:
    """The job template for ``scheduler`` (installed package first, then the checkout)."""
    name = f"{scheduler}.sh.in"
    try:
        res = importlib.resources.files("ptychompi") / "jobscripts" / name
        if res.is_file():
            return res.read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):
        pass
    local = Path(__file__).resolve().parents[2] / "jobscripts" / name  # ptychompi/app/
    if local.is_file():
        return local.read_text(encoding="utf-8")
    raise PtychompiError(f"job template {name} is missing from the ptychompi installation; "
                         "reinstall ptychompi")


def _check(scheduler: str, nodes: int, gpus_per_node: int, time: str,
           account: str | None, queue: str | None) -> None:
    if scheduler not in SCHEDULERS:
        raise PtychompiError(f"scheduler {scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    for flag, n in (("--nodes", nodes), ("--gpus-per-node", gpus_per_node)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise PtychompiError(f"{flag} {n!r} must be a whole number of at least 1")
    m = _TIME.match(str(time))
    if not m or not any(int(g) for g in m.groups()):
        raise PtychompiError(f"--time {time!r} is not a wall time HH:MM:SS (e.g. 02:30:00)")
    for flag, value in (("--account", account), ("--queue", queue)):
        if value is not None and not _NAME.match(value):
            raise PtychompiError(f"{flag} {value!r}: use letters, digits and _ . - @ : + only")


def _plain(text: str, what: str) -> str:
    """``text`` unless it holds a control character (newline, carriage return, tab, ...)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise PtychompiError(f"{what} {text!r} contains a newline or another control "
                             "character, which a job script cannot hold safely; rename it")
    return text


def _default_setup() -> str:
    if sys.prefix != sys.base_prefix:  # running from a virtual environment: reuse it
        activate = Path(sys.prefix) / "bin" / "activate"
        if activate.is_file():
            return (f"source {shlex.quote(str(activate))}"
                    "  # the environment `ptychompi submit` ran in")
    return "# no --setup given: ptychompi must already be on PATH"


def _render(config_path: str | os.PathLike | None, scheduler: str, nodes: int,
            gpus_per_node: int, time: str, account: str | None, queue: str | None,
            setup: str | None, batch: tuple[Path, list[str]] | None = None
            ) -> tuple[str, Path]:
    """The script and its folder; ``batch`` = (queue folder, ``queue run`` options) renders
    ``ptychompi queue run`` instead of ``ptychompi run`` (``config_path`` unused)."""
    _check(scheduler, nodes, gpus_per_node, time, account, queue)
    workdir = Path(_plain(str(Path.cwd()), "the working folder"))
    if batch is not None:
        config_abs = Path(_plain(os.path.abspath(batch[0]), "the queue folder"))
        output_dir, what = config_abs, "the queue folder"
    else:
        cfg = load_config(config_path)  # a missing or invalid config fails here, in its words
        config_abs = Path(_plain(os.path.abspath(config_path), "the config file name"))
        output_dir = Path(_plain(os.path.abspath(workdir / cfg.output.directory),
                                 "output.directory"))
        what = "output.directory"
    if re.search(r"\s", str(output_dir)):
        raise PtychompiError(f"{what} {str(output_dir)!r} contains spaces, which "
                             "job-script directives cannot hold; choose a path without spaces")
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", config_abs.stem) or "job"
    optional = []
    if scheduler == "slurm":
        if account:
            optional.append(f"#SBATCH --account={account}")
        if queue:
            optional.append(f"#SBATCH --partition={queue}")
        job_name = f"ptychompi-{stem}"
    else:
        if account:
            optional.append(f"#PBS -A {account}")
        if queue:
            optional.append(f"#PBS -q {queue}")
        job_name = ("p" + stem)[:15] if not stem[0].isalpha() else stem[:15]
    values = {
        "job_name": job_name, "nodes": nodes, "gpus_per_node": gpus_per_node,
        "ntasks": nodes * gpus_per_node, "ncpus": gpus_per_node, "time": time,
        "output_dir": str(output_dir), "optional_directives": "\n".join(optional),
        "config_path": shlex.quote(str(config_abs)), "config": shlex.quote(str(config_abs)),
        "workdir": shlex.quote(str(workdir)),
        "setup": setup.rstrip("\n") if setup else _default_setup(),
        "command": "run", "options": "",
        "hint": "add --resume to continue from the last checkpoint",
    }
    if batch is not None:
        values.update(command="queue run", options="".join(" " + shlex.quote(o)
                                                          for o in batch[1]),
                      hint="submit this script again to resume the queue")
    try:
        script = Template(template_text(scheduler)).substitute(values)
    except (KeyError, ValueError) as exc:
        raise PtychompiError(f"job template {scheduler}.sh.in is broken ({exc}); "
                             "reinstall ptychompi") from None
    return script, output_dir


def render_job(config_path: str | os.PathLike, scheduler: str, nodes: int, gpus_per_node: int,
               time: str, account: str | None = None, queue: str | None = None,
               setup: str | None = None) -> str:
    """The job script text: ``nodes`` × ``gpus_per_node`` ranks running ``ptychompi run``."""
    return _render(config_path, scheduler, nodes, gpus_per_node, time, account, queue,
                   setup)[0]


def submit_cli(args: argparse.Namespace) -> int:
    """Write ``<output.directory>/job.<scheduler>.sh``; print it (--dry-run) or submit it.

    With ``--ranks-per-job K`` the script runs the queue in folder ``--queue`` (one allocation,
    groups of K ranks, ``ptychompi queue run``) and ``--partition`` names the partition.
    """
    batch = None
    partition = getattr(args, "partition", None)
    if getattr(args, "ranks_per_job", None) is not None:
        from .queue.cli import batch_options  # noqa: PLC0415

        if args.config:
            raise PtychompiError("give a config (one run) or --queue DIR --ranks-per-job K (a "
                                 "queue), not both")
        batch = batch_options(args)
    elif not args.config:
        raise PtychompiError("give a config file, or --queue DIR --ranks-per-job K to run a "
                             "queue in one allocation")
    else:
        partition = partition or args.queue
    script, output_dir = _render(args.config, args.scheduler, args.nodes, args.gpus_per_node,
                                 args.time, args.account, partition, args.setup, batch)
    path = output_dir / f"job.{args.scheduler}.sh"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(script, encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP)
    except OSError as exc:
        raise PtychompiError(f"cannot write the job script {path} ({exc.strerror or exc}); "
                             "set output.directory to a writable folder") from None
    tool = SCHEDULERS[args.scheduler]
    if getattr(args, "dry_run", False):
        print(script, end="")
        print(f"# wrote {path}; submit it with: {tool} {path}", file=sys.stderr)
        return 0
    exe = shutil.which(tool)
    if exe is None:
        raise PtychompiError(f"{tool} not found on PATH; run `ptychompi submit` on the "
                             f"cluster's login node, or use --dry-run and submit {path} yourself")
    try:
        proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PtychompiError(f"{tool} {path} failed to run ({exc})") from None
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout or "").split()) or "no message"
        raise PtychompiError(f"{tool} {path} failed (exit {proc.returncode}): {detail}")
    print(f"wrote {path}")
    out = (proc.stdout or "").strip()
    if args.scheduler == "slurm":
        print(out or "Submitted batch job (sbatch printed no id)")
    else:
        print(f"Submitted PBS job {out}" if out else "Submitted PBS job (qsub printed no id)")
    return 0
