"""Results browser routes: the tree of result files, one result's facts, images, downloads."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ...errors import PtychompiError
from ..live import downsample
from .app import GuiSettings, settings_of
from .imaging import object_views
from .paths import confine, relative
from .routes_run import _image_args, _png

__all__ = ["routes", "find_results"]

RESULT_NAME = "result.h5"
_MAX_DIRS = 5000
_CACHE_SIZE = 4
DISPLAY_MAX = 2048  # object images are block-averaged to at most this many pixels a side


def find_results(roots: list[Path], max_depth: int = 8) -> list[Path]:
    """``result.h5`` files under the roots (hidden folders and links out of the roots skipped)."""
    found: list[Path] = []
    seen = 0
    for root in roots:
        if not root.is_dir():
            continue
        base = len(root.parts)
        for dirpath, dirnames, filenames in os.walk(root):
            seen += 1
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and not (here / d).is_symlink())
            if len(here.parts) - base >= max_depth:
                dirnames[:] = []
            if RESULT_NAME in filenames and not (here / RESULT_NAME).is_symlink():
                found.append(here / RESULT_NAME)
            if seen > _MAX_DIRS:
                return found
    return found


async def _tree(request: Request) -> JSONResponse:
    s = settings_of(request)

    def rows() -> list[dict]:
        out = []
        for p in find_results(s.roots):
            try:
                st = p.stat()
            except OSError:
                continue
            out.append({"path": relative(p, s.roots), "folder": relative(p.parent, s.roots),
                        "mtime": st.st_mtime, "bytes": st.st_size})
        return sorted(out, key=lambda r: r["path"])

    return JSONResponse({"results": await run_in_threadpool(rows)})


def _result_path(s: GuiSettings, given: str | None) -> Path:
    p = confine(s.roots, given)
    if p.is_dir():
        p = p / RESULT_NAME
    if not p.is_file() or p.suffix != ".h5":
        raise HTTPException(404, "not found")
    return p


def _load(s: GuiSettings, path: Path) -> Any:
    """The result file, read once per modification (a few kept)."""
    from ...io.results import read_result  # noqa: PLC0415

    key = (str(path), path.stat().st_mtime_ns)
    cache = s.cache.setdefault("results", {})
    if key not in cache:
        data = read_result(path)
        small, factor = downsample(data.object, DISPLAY_MAX)  # what a screen can show
        cache[key] = (data, object_views(small), factor)
        while len(cache) > _CACHE_SIZE:
            cache.pop(next(iter(cache)))
    return cache[key]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


async def _info(request: Request) -> JSONResponse:
    s = settings_of(request)
    path = _result_path(s, request.query_params.get("path"))
    data, _, _ = await run_in_threadpool(_load, s, path)
    exports = sorted(p.name for p in path.parent.iterdir()
                     if p.suffix.lower() in (".png", ".tif", ".tiff", ".csv"))
    return JSONResponse({
        "path": relative(path, s.roots), "folder": relative(path.parent, s.roots),
        "object_shape": list(data.object.shape), "probe_modes": int(data.probe.shape[0]),
        "probe_shape": list(data.probe.shape[1:]), "pixel_size_m": data.pixel_size,
        "positions": int(len(data.positions)), "error": _jsonable(data.error),
        "config_yaml": data.config_yaml, "provenance": _jsonable(data.provenance),
        "exports": exports})


async def _image(request: Request) -> Response:
    s = settings_of(request)
    path = _result_path(s, request.query_params.get("path"))
    data, views, factor = await run_in_threadpool(_load, s, path)
    kind = request.query_params.get("kind", "phase")
    px: float | None = data.pixel_size
    if kind in views:
        a, px = views[kind], data.pixel_size * factor
    elif kind in ("probe", "probe_phase"):
        try:
            mode = int(request.query_params.get("mode", 0))
        except ValueError:
            raise HTTPException(400, "mode must be a whole number") from None
        if not 0 <= mode < data.probe.shape[0]:
            raise HTTPException(404, f"no probe mode {mode}")
        a = np.abs(data.probe[mode]) if kind == "probe" else np.angle(data.probe[mode])
    else:
        raise HTTPException(400, "kind is phase, amplitude, probe or probe_phase")
    return await run_in_threadpool(_png, a, px, _image_args(request))


def _zip_export(data: Any, fmt: str, stem: str) -> bytes:
    from ...io.export import export_arrays  # noqa: PLC0415

    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="ptychompi-gui-") as tmp:
        files = export_arrays(data.object, data.probe, data.pixel_size, fmt, tmp, stem)
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in files:
                z.write(f, Path(f).name)
    return buf.getvalue()


async def _download(request: Request) -> Response:
    s = settings_of(request)
    path = _result_path(s, request.query_params.get("path"))
    fmt = request.query_params.get("fmt", "hdf5")
    stem = path.parent.name or "result"
    if fmt == "hdf5":
        return FileResponse(path, filename=f"{stem}.h5", media_type="application/x-hdf5")
    data, _, _ = await run_in_threadpool(_load, s, path)
    if fmt == "error-csv":
        text = "iteration,error\n" + "".join(f"{i + 1},{e:.9g}\n"
                                             for i, e in enumerate(data.error))
        return Response(text, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{stem}_error.csv"'})
    if fmt not in ("tiff", "png", "csv"):
        raise HTTPException(400, "fmt is hdf5, tiff, png, csv or error-csv")
    try:
        blob = await run_in_threadpool(_zip_export, data, fmt, stem)
    except PtychompiError as exc:
        return JSONResponse({"error": f"ptychompi: error: {exc}"}, status_code=400)
    return Response(blob, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{stem}_{fmt}.zip"'})


def routes() -> list[Route]:
    return [
        Route("/api/results/tree", _tree),
        Route("/api/results/info", _info),
        Route("/api/results/image", _image),
        Route("/api/results/download", _download),
    ]
