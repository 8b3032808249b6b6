"""Parameters page routes: the form's schema, validation, YAML in and out, imports, browsing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ...errors import ConfigError, PtychompiError
from .app import settings_of
from .paths import confine, relative
from .schema import dict_to_values, schema, validate, values_to_dict

__all__ = ["routes", "mda_updates", "read_json"]


async def read_json(request: Request) -> dict:
    """The request's JSON object body (400 when it is not one)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise HTTPException(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the request body must be a JSON object")
    return body


def _values(body: dict) -> dict:
    values = body.get("values", {})
    if not isinstance(values, dict):
        raise HTTPException(400, "values must be an object of key -> text")
    return values


def _error(exc: Exception) -> JSONResponse:
    return JSONResponse({"error": f"ptychompi: error: {exc}"}, status_code=400)


async def _schema(request: Request) -> JSONResponse:
    return JSONResponse(schema())


async def _validate(request: Request) -> JSONResponse:
    body = await read_json(request)
    return JSONResponse(await run_in_threadpool(validate, _values(body)))


def _yaml_to_values(text: str, where: str) -> dict:
    from ...config import config_from_dict, parse_yaml  # noqa: PLC0415

    tree = parse_yaml(text, where)
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{where}: a config must be a mapping of sections (data, ...)")

    config_from_dict(tree)  # the CLI's own check, same message
    return dict_to_values(tree)


async def _from_yaml(request: Request) -> JSONResponse:
    body = await read_json(request)
    text = body.get("yaml")
    if not isinstance(text, str):
        raise HTTPException(400, "yaml must be a string")
    try:
        return JSONResponse({"values": _yaml_to_values(text, "the YAML")})
    except PtychompiError as exc:
        return _error(exc)


async def _from_ptychopy(request: Request) -> JSONResponse:
    from ...compat.ptychopy import parse  # noqa: PLC0415

    body = await read_json(request)
    cmd = body.get("command")
    if not isinstance(cmd, str) or not cmd.strip():
        return _error(ConfigError("give a ptychopy command string (./ptycho -key=value ...)"))
    if not cmd.lstrip().startswith(("./", "/")) and cmd.lstrip().startswith("-"):
        cmd = "./ptycho " + cmd  # the first word is the program name
    try:
        cfg = await run_in_threadpool(parse, cmd)
    except PtychompiError as exc:
        return _error(exc)
    return JSONResponse({"values": dict_to_values(cfg.to_dict())})


def mda_updates(path: Path, current: dict) -> tuple[dict[str, Any], str]:
    """Config keys an MDA file fills and its summary: the numbers ``ptychompi queue add
    --template`` takes from it (positions, scan dimensions, step, points per row file,
    energy; ``{scan:04d}`` in data.path filled in)."""
    from ...io.mda import read_mda, summary  # noqa: PLC0415
    from ..queue.jobs import fill_pattern, mda_values  # noqa: PLC0415

    pv_map = current.get("data", {}).get("mda_pv_map")
    try:
        found = mda_values(path, pv_map if isinstance(pv_map, dict) else None)
        text = summary(read_mda(str(path)))
    except PtychompiError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader surprise is one line
        raise PtychompiError(f"{path.name}: cannot read the MDA file ({type(exc).__name__}: "
                             f"{exc})") from None
    updates: dict[str, Any] = {"data.mda_file": str(path), "data.positions": "mda",
                               "data.scan_dims": found["scan_dims"],
                               "data.frames_per_file": found["points_per_row"]}
    if found["step_m"] is not None:
        updates["data.step_m"] = [float(f"{abs(v):.6g}") for v in found["step_m"]]
    if found["energy_kev"]:
        updates["geometry.energy_kev"] = float(f"{found['energy_kev']:.6g}")
    data_path = current.get("data", {}).get("path")
    if isinstance(data_path, str) and "{" in data_path:
        updates["data.path"] = fill_pattern(data_path, found["scan"], path)
    return updates, text


async def _from_mda(request: Request) -> JSONResponse:
    s = settings_of(request)
    body = await read_json(request)
    path = confine(s.roots, body.get("path"))
    if not path.is_file():
        raise HTTPException(404, "not found")
    values = dict(_values(body))
    try:
        tree = values_to_dict(values) if values else {}
        updates, text = await run_in_threadpool(mda_updates, path, tree)
    except PtychompiError as exc:
        return _error(exc)
    flat = dict_to_values(tree)
    shown = {}
    for key, value in updates.items():
        shown[key] = (relative(Path(value), s.roots) if key == "data.mda_file" else
                      ", ".join(str(v) for v in value) if isinstance(value, list) else str(value))
    flat.update(shown)
    return JSONResponse({"values": flat, "changed": shown, "summary": text})


async def _load(request: Request) -> JSONResponse:
    s = settings_of(request)
    path = confine(s.roots, request.query_params.get("path"))
    if not path.is_file():
        raise HTTPException(404, "not found")
    try:
        text = path.read_text(encoding="utf-8")
        return JSONResponse({"values": _yaml_to_values(text, relative(path, s.roots)),
                             "yaml": text})
    except (OSError, UnicodeDecodeError) as exc:
        return _error(PtychompiError(f"{relative(path, s.roots)}: cannot read it ({exc})"))
    except PtychompiError as exc:
        return _error(exc)


async def _save(request: Request) -> JSONResponse:
    s = settings_of(request)
    body = await read_json(request)
    path = confine(s.roots, body.get("path"), must_exist=False)
    if path.suffix.lower() not in (".yaml", ".yml"):
        return _error(PtychompiError("save the configuration as a .yaml or .yml file"))
    if not path.parent.is_dir():
        raise HTTPException(404, "not found")
    checked = validate(_values(body))
    if not checked["ok"]:
        return JSONResponse({"error": checked["error"], "key": checked["key"]}, status_code=400)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(checked["yaml"], encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return _error(PtychompiError(f"cannot write {relative(path, s.roots)} "
                                     f"({exc.strerror or exc})"))
    return JSONResponse({"path": relative(path, s.roots)})


async def _files(request: Request) -> JSONResponse:
    """One folder's entries under the roots (for the file pickers)."""
    s = settings_of(request)
    folder = confine(s.roots, request.query_params.get("dir") or ".")
    if not folder.is_dir():
        raise HTTPException(404, "not found")
    exts = tuple(e for e in (request.query_params.get("ext") or "").split(",") if e)
    entries = []
    try:
        for child in sorted(folder.iterdir(), key=lambda c: c.name.lower())[:2000]:
            if child.name.startswith("."):
                continue
            try:
                real = child.resolve()
            except OSError:
                continue
            if not any(real == r or r in real.parents for r in s.roots):
                continue
            is_dir = child.is_dir()
            if not is_dir and exts and not child.name.lower().endswith(exts):
                continue
            entries.append({"name": child.name, "dir": is_dir,
                            "path": relative(real, s.roots)})
    except OSError as exc:
        return _error(PtychompiError(f"cannot list {relative(folder, s.roots)} ({exc})"))
    parent = relative(folder.parent, s.roots) if folder not in s.roots else None
    return JSONResponse({"dir": relative(folder, s.roots), "parent": parent,
                         "entries": entries})


def routes() -> list[Route]:
    return [
        Route("/api/config/schema", _schema),
        Route("/api/config/validate", _validate, methods=["POST"]),
        Route("/api/config/from_yaml", _from_yaml, methods=["POST"]),
        Route("/api/config/from_ptychopy", _from_ptychopy, methods=["POST"]),
        Route("/api/config/from_mda", _from_mda, methods=["POST"]),
        Route("/api/config/load", _load),
        Route("/api/config/save", _save, methods=["POST"]),
        Route("/api/files", _files),
    ]

