"""``ptychompi queue run|add|list|cancel|retry|priority``: the batch queue's command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ...errors import PtychompiError
from .store import Job, QueueError, QueueStore

__all__ = ["add_queue_arguments", "queue_cli", "format_table", "summary_text"]


def add_queue_arguments(q: argparse.ArgumentParser) -> None:
    """The ``queue`` sub-commands on parser ``q``."""
    sub = q.add_subparsers(dest="queue_command", required=True)

    r = sub.add_parser("run", help="run the queue (under mpiexec/srun: groups of k ranks)")
    r.add_argument("folder", help="queue folder (holds queue.sqlite and jobs/)")
    r.add_argument("--ranks-per-job", type=int, default=1, metavar="K",
                   help="ranks per group: 1 = one job per device, world size = each job on "
                        "all ranks (default 1)")
    r.add_argument("--wait", type=float, default=0.0, metavar="S",
                   help="keep waiting S seconds for new jobs once the queue is empty "
                        "(default 0: end when it is empty)")
    r.add_argument("--poll", type=float, default=1.0, metavar="S",
                   help="seconds between looks at the queue database and the inbox")
    r.add_argument("--inbox", default=None, metavar="DIR",
                   help="watched folder: a config, MDA or ptychopy file dropped there becomes "
                        "a job (default: FOLDER/inbox when it exists)")
    r.add_argument("--template", default=None, metavar="YAML",
                   help="template config for MDA files dropped into the inbox")
    r.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="checkpoint jobs whose config has no checkpoints every N iterations, "
                        "so a restarted queue resumes them (default 0: as configured)")
    r.add_argument("--coordinator", default="auto",
                   choices=("auto", "thread", "inline", "rank"),
                   help="where dispatch runs: a thread on rank 0 (auto when MPI allows), "
                        "between rank 0's iterations, or a rank of its own")
    r.add_argument("--max-attempts", type=int, default=3, metavar="N",
                   help="fail a job that was running when the queue ended N times")
    r.add_argument("--notify", default=None, metavar="YAML",
                   help="config whose output.notify.email gets the end-of-queue summary (and "
                        "the per-job mail of jobs without their own)")
    r.add_argument("--quiet", action="store_true", help="no coordinator lines on stderr")

    a = sub.add_parser("add", help="add jobs (creates the queue folder if needed)")
    a.add_argument("folder")
    a.add_argument("files", nargs="*", help="YAML configs, or MDA files with --template")
    a.add_argument("--ptychopy", action="append", default=[], metavar="CMDSTR",
                   help="a ptychopy command string (repeat for several jobs)")
    a.add_argument("--template", default=None, metavar="YAML",
                   help="template config that MDA files fill (energy, dims, step, positions, "
                        "{scan} in data.path)")
    a.add_argument("--name", default=None, help="job name (one job only)")
    a.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    a.add_argument("--email", default=None, help="e-mail this address when the job ends")

    ls = sub.add_parser("list", help="show the jobs (a table, or --json)")
    ls.add_argument("folder")
    ls.add_argument("--json", action="store_true", help="jobs and groups as JSON")

    for name, text in (("cancel", "cancel queued or running jobs"),
                       ("retry", "queue failed or cancelled jobs again")):
        c = sub.add_parser(name, help=text)
        c.add_argument("folder")
        c.add_argument("ids", nargs="+", type=int, metavar="ID")

    p = sub.add_parser("priority", help="change a job's priority (higher runs first)")
    p.add_argument("folder")
    p.add_argument("id", type=int)
    p.add_argument("priority", type=int)


# ------------------------------------------------------------------------ add
def _collect(args: argparse.Namespace) -> list[tuple[dict, str, str]]:
    """Every job of ``queue add``, all built before any is added (all or nothing)."""
    from .jobs import job_from_mda, job_from_ptychopy, job_from_yaml, load_template  # noqa

    template = load_template(args.template) if args.template else None
    built = []
    for f in args.files:
        suffix = Path(f).suffix.lower()
        if suffix in (".yaml", ".yml"):
            built.append(job_from_yaml(f))
        elif suffix == ".mda":
            if template is None:
                raise QueueError(f"{f}: an MDA file needs --template beamline.yaml (the config "
                                 "the MDA file fills in)")
            built.append(job_from_mda(f, template))
        else:
            raise QueueError(f"{f}: give .yaml/.yml configs or .mda files (with --template); "
                             "a ptychopy command string goes after --ptychopy")
    built += [job_from_ptychopy(c) for c in args.ptychopy]
    if not built:
        raise QueueError("nothing to add: give YAML configs, MDA files with --template, or "
                         "--ptychopy CMDSTR")
    if args.name and len(built) > 1:
        raise QueueError("--name names one job; leave it out for several")
    return built


def _cmd_add(args: argparse.Namespace) -> int:
    from .store import validate_config  # noqa: PLC0415

    built = _collect(args)
    for config, _, _ in built:
        validate_config(config)
    with QueueStore(args.folder, create=True) as store:
        for config, name, source in built:
            job = store.add(config, name=args.name or name, priority=args.priority,
                            email=args.email, source=source)
            print(f"job {job.id} ({job.name}) queued -> {job.output_dir}")
    return 0


# ------------------------------------------------------------------------ list
def _progress(job: Job) -> str:
    iteration, total = job.iteration, job.iterations
    if job.state == "running":
        from ..live import read_status  # noqa: PLC0415

        try:
            status = read_status(job.output_dir)
        except Exception:  # noqa: BLE001 - a half-readable snapshot: use the database
            status = None
        if status and status.get("iteration", 0) > iteration:
            iteration = int(status["iteration"])
    if job.state == "done":
        iteration = max(iteration, total)
    pct = 100.0 * iteration / total if total else 0.0
    return f"{iteration}/{total} {pct:3.0f}%"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(jobs: list[Job], groups: list[dict]) -> str:
    """The ``queue list`` table: jobs (dispatch order) and per-group accounting."""
    head = (f"{'id':>4} {'name':<22} {'state':<9} {'prio':>4} {'grp':>3} {'progress':<14} "
            f"{'wall_s':>8} {'error':>10} {'bytes':>10} {'device':<10} reason")
    lines = [head]
    for j in jobs:
        grp = "-" if j.group is None else str(j.group)
        state = j.state + ("*" if j.cancel_requested and j.state == "running" else "")
        lines.append(f"{j.id:>4} {j.name[:22]:<22} {state:<9} {j.priority:>4} {grp:>3} "
                     f"{_progress(j):<14} {_fmt(j.wall_s, '8.1f'):>8} "
                     f"{_fmt(j.final_error, '10.4g'):>10} "
                     f"{_fmt(j.bytes_exchanged, 'd'):>10} {(j.device or '-')[:10]:<10} "
                     f"{(j.error or '')[:80]}")
    if groups:
        lines.append("")
        lines.append(f"{'group':>5} {'ranks':<12} {'devices':<16} {'done':>4} {'failed':>6} "
                     f"{'cancel':>6} {'iters':>6} {'busy_s':>8} {'bytes':>12}")
        for g in groups:
            ranks = ",".join(map(str, json.loads(g["ranks"])))
            devices = ",".join(json.loads(g["devices"])) if g.get("devices") else "-"
            lines.append(f"{g['grp']:>5} {ranks[:12]:<12} {devices[:16]:<16} "
                         f"{g['jobs_done']:>4} {g['jobs_failed']:>6} {g['jobs_cancelled']:>6} "
                         f"{g['iterations']:>6} {g['busy_s']:>8.1f} {g['bytes_exchanged']:>12}")
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    with QueueStore(args.folder) as store:
        jobs, groups = store.jobs(), store.groups()
    if args.json:
        for g in groups:
            g["ranks"] = json.loads(g["ranks"])
            g["devices"] = json.loads(g["devices"]) if g.get("devices") else None
        print(json.dumps({"jobs": [j.to_dict() for j in jobs], "groups": groups}, indent=1))
    else:
        print(format_table(jobs, groups))
    return 0


def _cmd_change(args: argparse.Namespace) -> int:
    with QueueStore(args.folder) as store:
        if args.queue_command == "priority":
            job = store.set_priority(args.id, args.priority)
            print(f"job {job.id} ({job.name}) priority {job.priority}")
            return 0
        for job_id in args.ids:
            job = store.cancel(job_id) if args.queue_command == "cancel" \
                else store.retry(job_id)
            note = " (cancel requested; it stops at its next iteration)" \
                if job.state == "running" else ""
            print(f"job {job.id} ({job.name}) {job.state}{note}")
    return 0


# ------------------------------------------------------------------------ run
def summary_text(finished: list[dict], counts: dict[str, int], seconds: float) -> str:
    """The end-of-queue summary: this run's jobs and the queue's totals."""
    lines = [f"ptychompi queue: {len(finished)} job(s) ended in this run ({seconds:.1f} s); "
             "queue now: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    for j in finished:
        reason = f"  {j['error']}" if j.get("error") else ""
        err = "" if j.get("final_error") is None else f" error {j['final_error']:.4g}"
        lines.append(f"  job {j['id']} {j['name']}: {j['state']} on group {j['group']}, "
                     f"{j['iteration']}/{j['iterations']} it, {j.get('wall_s') or 0:.1f} s"
                     f"{err}{reason}")
    return "\n".join(lines)


def _run_options(args: argparse.Namespace) -> Any:
    from ...config import load_config  # noqa: PLC0415
    from .dispatch import QueueOptions  # noqa: PLC0415
    from .jobs import load_template  # noqa: PLC0415

    folder = Path(args.folder).absolute()
    inbox = Path(args.inbox).absolute() if args.inbox else None
    if inbox is None and (folder / "inbox").is_dir():
        inbox = folder / "inbox"
    if inbox is not None and not inbox.is_dir():
        raise QueueError(f"--inbox {str(inbox)!r} is not a folder; create it first")
    for flag, value in (("--wait", args.wait), ("--checkpoint-every", args.checkpoint_every)):
        if value < 0:
            raise QueueError(f"{flag} {value} must not be negative")
    if args.poll <= 0 or args.max_attempts < 1:
        raise QueueError("--poll must be positive and --max-attempts at least 1")
    notify = None
    if args.notify:
        notify = load_config(args.notify).output.notify.email
        if notify is None:
            raise QueueError(f"--notify {args.notify}: the file sets no output.notify.email")
    return QueueOptions(folder=folder, ranks_per_job=args.ranks_per_job, wait_s=args.wait,
                        poll_s=args.poll, inbox=inbox,
                        template=load_template(args.template) if args.template else None,
                        checkpoint_every=args.checkpoint_every,
                        max_attempts=args.max_attempts, coordinator=args.coordinator,
                        notify=notify, quiet=args.quiet)


def _cmd_run(args: argparse.Namespace) -> int:
    from ..api import agree  # noqa: PLC0415
    from ..runner import _world  # noqa: PLC0415
    from .dispatch import run_queue  # noqa: PLC0415

    world = _world()
    if world is None:
        raise QueueError("ptychompi queue run needs mpi4py")
    opts, error = None, None
    try:
        opts = _run_options(args)
    except Exception as exc:  # noqa: BLE001 - agreed by every rank
        error = exc
    agree(world if world.Get_size() > 1 else None, error)
    from ..signals import install  # noqa: PLC0415

    t0 = time.monotonic()
    restore = install(world if world.Get_size() > 1 else None)  # SIGTERM ends every rank
    try:
        run_queue(opts, world)
    finally:
        restore()
    if world.Get_rank() == 0:
        with QueueStore(opts.folder) as store:
            counts = {s: store.count(s) for s in ("done", "failed", "cancelled", "queued",
                                                   "running")}
        text = summary_text(opts.finished, counts, time.monotonic() - t0)
        print(text, file=sys.stderr)
        try:
            (opts.folder / "summary.txt").write_text(text + "\n", encoding="utf-8")
        except OSError:
            pass
        if opts.notify is not None:
            import socket  # noqa: PLC0415

            from ..notify import send_email  # noqa: PLC0415

            send_email(opts.notify, f"ptychompi queue ended on {socket.gethostname()}: "
                       f"{opts.folder}", text)
    return 0


def queue_cli(args: argparse.Namespace) -> int:
    """Entry point of ``ptychompi queue``."""
    command = args.queue_command
    if command == "run":
        return _cmd_run(args)
    if command == "add":
        return _cmd_add(args)
    if command == "list":
        return _cmd_list(args)
    if command in ("cancel", "retry", "priority"):
        return _cmd_change(args)
    raise PtychompiError(f"unknown queue command {command!r}")  # pragma: no cover


def batch_options(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """``ptychompi submit --queue DIR --ranks-per-job K``: the checked queue folder and the
    ``queue run`` options the job script passes on."""
    from .dispatch import check_group_size  # noqa: PLC0415

    if not args.queue:
        raise QueueError("--ranks-per-job runs a queue: give its folder with --queue DIR "
                         "(the partition goes in --partition)")
    folder = Path(args.queue).absolute()
    QueueStore(folder).close()  # exists and is a queue
    check_group_size(args.nodes * args.gpus_per_node, args.ranks_per_job)
    options = ["--ranks-per-job", str(args.ranks_per_job)]
    if getattr(args, "checkpoint_every", 0):
        if args.checkpoint_every < 0:
            raise QueueError(f"--checkpoint-every {args.checkpoint_every} must not be negative")
        options += ["--checkpoint-every", str(args.checkpoint_every)]
    if getattr(args, "notify", None):
        from ...config import load_config  # noqa: PLC0415

        if load_config(args.notify).output.notify.email is None:
            raise QueueError(f"--notify {args.notify}: the file sets no output.notify.email")
        options += ["--notify", str(Path(args.notify).absolute())]
    return folder, options
