"""The Starlette application: token gate, pages, and the JSON / PNG / SSE routes.

Every route needs the token (``?token=``, which on the page sets a cookie, the cookie, or the
``X-Ptychompi-Token`` header); files are served only from under the roots (``--root`` and the
queue folder), everything else is a 404. No route passes user text to a shell.
"""

from __future__ import annotations

import hmac
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ...errors import PtychompiError

__all__ = ["make_app", "GuiSettings", "TOKEN_HEADER"]

TOKEN_HEADER = "x-ptychompi-token"


@dataclass
class GuiSettings:
    """What the routes need: the roots, the queue folder, the token and the SSE period."""

    root: Path
    queue: Path
    token: str
    cookie: str = "ptychompi_token"
    poll_s: float = 0.5
    cache: dict = field(default_factory=dict)

    @property
    def roots(self) -> list[Path]:
        return [self.root] if self.queue.is_relative_to(self.root) else [self.root, self.queue]


class TokenGate:
    """ASGI middleware: 403 unless the request carries the token."""

    def __init__(self, app: ASGIApp, settings: GuiSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; the app has no websocket routes
            await self.app(scope, receive, send)
            return
        req = Request(scope)
        s = self.settings
        query = req.query_params.get("token")
        candidates = [query, req.cookies.get(s.cookie), req.headers.get(TOKEN_HEADER)]
        auth = req.headers.get("authorization", "")
        if auth.lower().startswith("token "):
            candidates.append(auth[6:].strip())
        if not any(c and hmac.compare_digest(c.encode(), s.token.encode()) for c in candidates):
            resp = PlainTextResponse("403 forbidden: open the URL that `ptychompi gui` printed "
                                     "(it carries the token)", status_code=403)
            await resp(scope, receive, send)
            return
        if req.method not in ("GET", "HEAD") and \
                req.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            # a page of another site can post a form, but not JSON, without the browser asking
            resp = PlainTextResponse("415: the API takes JSON", status_code=415)
            await resp(scope, receive, send)
            return
        if query and scope["path"] == "/" and req.method == "GET":
            resp = RedirectResponse("/", status_code=303)  # drop the token from the address
            resp.set_cookie(s.cookie, s.token, httponly=True, samesite="strict")
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _static_dir() -> Path:
    return Path(str(importlib.resources.files("ptychompi.app.gui") / "static"))


def _index(request: Request) -> Response:
    return FileResponse(_static_dir() / "index.html", headers={"Cache-Control": "no-store"})


async def _info(request: Request) -> Response:
    from ... import __version__  # noqa: PLC0415

    s = settings_of(request)
    return JSONResponse({"root": str(s.root), "queue": str(s.queue), "version": __version__})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def _ptychompi_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"ptychompi: error: {exc}"}, status_code=400)


def make_app(root: str | Path, queue: str | Path | None = None, *, token: str,
             cookie: str = "ptychompi_token", poll_s: float = 0.5) -> Starlette:
    """The GUI application serving ``root`` (and the queue folder, default ``root/queue``)."""
    from . import routes_config, routes_results, routes_run  # noqa: PLC0415

    if not token:
        raise PtychompiError("the GUI needs a non-empty token")
    root_p = Path(root).resolve()
    if not root_p.is_dir():
        raise PtychompiError(f"--root {str(root)!r} is not a folder; give an existing folder")
    queue_p = Path(queue).resolve() if queue else root_p / "queue"
    settings = GuiSettings(root=root_p, queue=queue_p, token=token, cookie=cookie,
                           poll_s=poll_s)
    routes: list[Any] = [Route("/", _index), Route("/api/info", _info),
                         Route("/favicon.ico", lambda request: Response(status_code=204))]
    routes += routes_config.routes() + routes_run.routes() + routes_results.routes()
    routes.append(Mount("/static", StaticFiles(directory=_static_dir()), name="static"))
    app = Starlette(routes=routes, middleware=[Middleware(TokenGate, settings=settings)],
                    exception_handlers={HTTPException: _http_error,
                                        PtychompiError: _ptychompi_error})
    app.state.settings = settings
    return app


def settings_of(request: Request) -> GuiSettings:
    return request.app.state.settings
