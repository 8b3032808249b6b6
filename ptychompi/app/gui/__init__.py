"""``ptychompi gui``: a web page to set parameters, submit and watch jobs and browse results.

Served by Starlette + uvicorn (the ``gui`` extra) from the machine that runs the jobs, on
127.0.0.1 by default and behind a random token, and reached through an SSH tunnel.
"""

from __future__ import annotations

__all__ = ["make_app", "serve"]


def __getattr__(name: str):  # lazy: the server libraries are an optional extra
    if name == "make_app":
        from .app import make_app  # noqa: PLC0415

        return make_app
    if name == "serve":
        from .server import serve  # noqa: PLC0415

        return serve
    raise AttributeError(name)
