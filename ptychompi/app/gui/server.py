"""``ptychompi gui``: start the server and print the URL with its token."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import secrets
import socket
import sys

from ...errors import PtychompiError

__all__ = ["serve", "gui_cli"]


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(root: str, queue: str | None, host: str = "127.0.0.1", port: int = 8050,
          token: str | None = None) -> int:
    """Run the GUI until interrupted; prints the URL (with the token) on stdout."""
    try:
        import uvicorn  # noqa: PLC0415

        from .app import make_app  # noqa: PLC0415
    except ImportError as exc:
        raise PtychompiError(f"the GUI needs the gui extra ({exc.name} is missing); "
                             "install it with: pip install 'ptychompi[gui]'") from None
    if not 0 <= port <= 65535:
        raise PtychompiError(f"--port {port} is not a port number (0..65535)")
    token = token or secrets.token_urlsafe(24)
    app = make_app(root, queue, token=token, cookie=f"ptychompi_token_{port}")
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc})"
        raise PtychompiError(f"{host}:{port} {why}; choose another --port") from None
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"ptychompi gui: serving {app.state.settings.root} (queue "
          f"{app.state.settings.queue})", flush=True)
    if not _loopback(host):
        print(f"ptychompi gui: warning: listening on {host}, not only this machine; the token "
              "is the only protection", file=sys.stderr, flush=True)
    print(f"    http://{shown}:{port}/?token={token}", flush=True)
    print(f"  on a cluster, from your computer: ssh -N -L {port}:localhost:{port} "
          f"{os.environ.get('USER', 'user')}@{socket.gethostname()}  then open "
          f"http://localhost:{port}/?token={token}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)  # open SSE streams end too
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0


def gui_cli(args: argparse.Namespace) -> int:
    """Entry point of ``ptychompi gui``."""
    return serve(args.root, args.queue, host=args.host, port=args.port,
                 token=os.environ.get("PTYCHOMPI_GUI_TOKEN") or None)
