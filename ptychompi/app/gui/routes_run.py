"""Run page and live view routes: devices, submission (queue, SLURM, PBS), the queue table,
and a running job's status (JSON and server-sent events) and images."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ...errors import PtychompiError
from ..live import read_snapshot, read_status
from .app import GuiSettings, settings_of
from .devices import devices
from .imaging import render_png
from .paths import confine, relative
from .routes_config import read_json
from .schema import PATH_KEYS, validate, values_to_dict

__all__ = ["routes", "job_config"]

_EMAIL = re.compile(r"^[^@\s,;<>\"'`$|&]+@[^@\s,;<>\"'`$|&]+\.[A-Za-z]{2,}$")


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": f"ptychompi: error: {message}"}, status_code=status)


def _store(s: GuiSettings, create: bool = False) -> Any:
    try:
        from ..queue.store import QueueStore  # noqa: PLC0415
    except ImportError:
        raise PtychompiError("this ptychompi has no batch queue (ptychompi.app.queue)") from None
    return QueueStore(s.queue, create=create)


def job_config(values: dict, root: Path, email: str | None) -> dict:
    """The job's config dict from the form: relative paths made absolute under ``root``, the
    e-mail address as the notification recipient."""
    tree = values_to_dict(values)
    for key in PATH_KEYS:
        *parents, last = key.split(".")
        node = tree
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(last), str) and node[last]:
            if not Path(node[last]).is_absolute():
                node[last] = str(root / node[last])
    if email:
        notify = tree.setdefault("output", {}).setdefault("notify", {})
        mail = notify.get("email") if isinstance(notify.get("email"), dict) else {}
        mail["to"] = [email]
        notify["email"] = mail
    return tree


async def _devices(request: Request) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(devices))


def _queue_rows(s: GuiSettings) -> dict:
    if not (s.queue / "queue.sqlite").is_file():
        return {"folder": str(s.queue), "exists": False, "jobs": []}
    store = _store(s)
    try:
        rows = []
        for job in store.jobs():
            row = job.to_dict()
            row.pop("config", None)
            live = read_status(job.output_dir) if job.state == "running" else None
            if live:
                row["iteration"] = max(row.get("iteration") or 0, int(live.get("iteration", 0)))
                row["eta_s"] = live.get("eta_s")
            row["progress"] = (row["iteration"] / row["iterations"]) if row["iterations"] else None
            rows.append(row)
    finally:
        store.close()
    return {"folder": str(s.queue), "exists": True, "jobs": rows}


async def _queue(request: Request) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(_queue_rows, settings_of(request)))


async def _queue_action(request: Request) -> JSONResponse:
    s = settings_of(request)
    action = request.path_params["action"]
    job_id = request.path_params["job_id"]

    def act() -> dict:
        store = _store(s)
        try:
            job = store.cancel(job_id) if action == "cancel" else store.retry(job_id)
            row = job.to_dict()
            row.pop("config", None)
            return row
        finally:
            store.close()

    return JSONResponse(await run_in_threadpool(act))


def _submit_batch(s: GuiSettings, tree: dict, name: str, body: dict) -> dict:
    """Write the job's YAML under its output folder and hand it to ``ptychompi submit``."""
    import yaml  # noqa: PLC0415

    out = Path(tree.setdefault("output", {}).get("directory") or str(s.root / "out"))
    tree["output"]["directory"] = str(out)
    if not any(out.resolve() == r or r in out.resolve().parents for r in s.roots):
        raise PtychompiError(f"output.directory {str(out)!r} is outside the GUI's root; "
                             "choose a folder under it")
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")

    args = _batch_args(body, config=str(config_path), scheduler=body["target"],
                       queue=_text(body, "partition"), partition=_text(body, "partition"))
    output, message = _run_submit(args)
    return {"target": body["target"], "config": relative(config_path, s.roots),
            "output": output, "message": message}


def _text(body: dict, key: str) -> str | None:
    v = body.get(key)
    return str(v).strip() if v not in (None, "") else None


def _whole(body: dict, key: str, default: int) -> int:
    v = body.get(key, default)
    try:
        return int(v)
    except (TypeError, ValueError):
        raise PtychompiError(f"{key} {v!r} must be a whole number") from None


def _batch_args(body: dict, **fixed: Any) -> argparse.Namespace:
    """The ``ptychompi submit`` arguments from the page's allocation fields."""
    return argparse.Namespace(nodes=_whole(body, "nodes", 1),
                              gpus_per_node=_whole(body, "gpus_per_node", 1),
                              time=_text(body, "time") or "01:00:00",
                              account=_text(body, "account"), setup=None,
                              dry_run=bool(body.get("dry_run")), **fixed)


def _run_submit(args: argparse.Namespace) -> tuple[str, str]:
    """``submit_cli`` with its printed lines captured (the scheduler runs without a shell)."""
    from ..submit import submit_cli  # noqa: PLC0415

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        submit_cli(args)
    return stdout.getvalue(), stderr.getvalue()


async def _allocate(request: Request) -> JSONResponse:
    """Run the queue in one SLURM/PBS allocation (``ptychompi submit --queue --ranks-per-job``)."""
    s = settings_of(request)
    body = await read_json(request)
    scheduler = body.get("scheduler")
    if scheduler not in ("slurm", "pbs"):
        return _error(f"scheduler {scheduler!r} is not one of slurm, pbs")

    def go() -> dict:
        _store(s, create=True).close()
        args = _batch_args(body, config=None, scheduler=scheduler, queue=str(s.queue),
                           partition=_text(body, "partition"),
                           ranks_per_job=_whole(body, "ranks_per_job", 1),
                           checkpoint_every=0, notify=None)
        output, message = _run_submit(args)
        return {"scheduler": scheduler, "output": output, "message": message}

    return JSONResponse(await run_in_threadpool(go))


async def _submit(request: Request) -> JSONResponse:
    s = settings_of(request)
    body = await read_json(request)
    values = body.get("values")
    if not isinstance(values, dict):
        raise HTTPException(400, "values must be an object of key -> text")
    target = body.get("target", "queue")
    if target not in ("queue", "slurm", "pbs"):
        return _error(f"target {target!r} is not one of queue, slurm, pbs")
    email = (body.get("email") or "").strip() or None
    if email and not _EMAIL.match(email):
        return _error(f"e-mail address {email!r} is not an address (name@host.domain)")
    checked = await run_in_threadpool(validate, values)
    if not checked["ok"]:
        return JSONResponse({"error": checked["error"], "key": checked["key"]}, status_code=400)
    from ..queue.store import sanitise_name  # noqa: PLC0415

    name = sanitise_name(str(body.get("name") or ""))
    tree = job_config(values, s.root, email)
    if target == "queue":
        out = tree.get("output", {})
        if out.get("directory") in (None, "", str(s.root / "out")) and \
                values.get("output.directory", "out") in ("", "out"):
            out.pop("directory", None)  # the queue's own jobs/<id>-<name> folder
        try:
            priority = int(body.get("priority") or 0)
        except (TypeError, ValueError):
            return _error(f"priority {body.get('priority')!r} must be a whole number")

        def add() -> dict:
            store = _store(s, create=True)
            try:
                row = store.add(tree, name=name, priority=priority, email=email,
                                source="dict").to_dict()
                row.pop("config", None)
                return row
            finally:
                store.close()

        return JSONResponse({"target": "queue", "job": await run_in_threadpool(add)})
    return JSONResponse(await run_in_threadpool(_submit_batch, s, tree, name, body))


# ----------------------------------------------------------------------------- live view
def _live_folder(s: GuiSettings, request: Request) -> tuple[Path, dict | None]:
    """The watched output folder (``?job=ID`` in the queue, or ``?dir=PATH`` under root)."""
    job = request.query_params.get("job")
    if job:
        try:
            job_id = int(job)
        except ValueError:
            raise HTTPException(404, "not found") from None
        store = _store(s)
        try:
            row = store.get(job_id).to_dict()
        except PtychompiError:
            raise HTTPException(404, "not found") from None
        finally:
            store.close()
        row.pop("config", None)
        return confine(s.roots, row["output_dir"], must_exist=False), row
    return confine(s.roots, request.query_params.get("dir"), must_exist=False), None


def _live_payload(s: GuiSettings, folder: Path, job: dict | None) -> dict:
    status = read_status(folder)
    result = folder / "result.h5"
    state = (status or {}).get("state") or (job or {}).get("state") or "waiting"
    if job and job.get("state") in ("failed", "cancelled"):
        state = job["state"]
    return {"dir": relative(folder, s.roots), "job": job, "status": status, "state": state,
            "result": relative(result, s.roots) if result.is_file() and state == "done"
            else None}


async def _live_status(request: Request) -> JSONResponse:
    s = settings_of(request)
    folder, job = await run_in_threadpool(_live_folder, s, request)
    return JSONResponse(await run_in_threadpool(_live_payload, s, folder, job))


async def _live_events(request: Request) -> StreamingResponse:
    """Server-sent events: one ``data:`` line per change of the job's live status."""
    s = settings_of(request)
    folder, job = await run_in_threadpool(_live_folder, s, request)
    job_id = job["id"] if job else None

    async def stream() -> Any:
        last: Any = None
        quiet = 0.0
        while True:
            if job_id is not None:
                row = (await run_in_threadpool(_live_folder, s, request))[1]
            else:
                row = None
            try:
                mtime = (folder / "live" / "status.json").stat().st_mtime_ns
            except OSError:
                mtime = None
            key = (mtime, row and row.get("state"))
            if key != last:
                last = key
                payload = await run_in_threadpool(_live_payload, s, folder, row)
                yield f"data: {json.dumps(payload)}\n\n"
                if payload["state"] in ("done", "failed", "cancelled"):
                    return
                quiet = 0.0
            elif quiet >= 15:
                yield ": keep-alive\n\n"
                quiet = 0.0
            if await request.is_disconnected():
                return
            await asyncio.sleep(s.poll_s)
            quiet += s.poll_s

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _image_args(request: Request) -> dict:
    q = request.query_params
    try:
        return {"cmap": q.get("cmap", "gray"), "low": float(q.get("low", 0.5)),
                "high": float(q.get("high", 99.5)), "bar": q.get("bar", "1") != "0"}
    except ValueError:
        raise HTTPException(400, "low and high are percentiles (numbers)") from None


def _png(a: Any, pixel_size: float | None, args: dict) -> Response:
    try:
        data = render_png(a, pixel_size=pixel_size, **args)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


async def _live_image(request: Request) -> Response:
    s = settings_of(request)
    folder, _ = await run_in_threadpool(_live_folder, s, request)
    kind = request.query_params.get("kind", "phase")
    snap = await run_in_threadpool(read_snapshot, folder)
    if snap is None:
        raise HTTPException(404, "no live snapshot yet")
    px = float(snap.get("pixel_size", 0.0))
    if kind in ("phase", "amplitude"):
        a = snap[kind]
    elif kind == "probe":
        probe = snap["probe"]
        try:
            mode = int(request.query_params.get("mode", 0))
        except ValueError:
            raise HTTPException(400, "mode must be a whole number") from None
        if not 0 <= mode < probe.shape[0]:
            raise HTTPException(404, f"no probe mode {mode}")
        a, px = probe[mode], 0.0
    else:
        raise HTTPException(400, "kind is phase, amplitude or probe")
    args = _image_args(request)
    return await run_in_threadpool(_png, a, px or None, args)


def routes() -> list[Route]:
    return [
        Route("/api/devices", _devices),
        Route("/api/queue", _queue),
        Route("/api/queue/{job_id:int}/{action:str}", _queue_action, methods=["POST"]),
        Route("/api/submit", _submit, methods=["POST"]),
        Route("/api/queue/allocate", _allocate, methods=["POST"]),
        Route("/api/live/status", _live_status),
        Route("/api/live/events", _live_events),
        Route("/api/live/image", _live_image),
    ]
