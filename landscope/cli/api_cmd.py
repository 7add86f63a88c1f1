"""`landscope api`: the REST API (and the dashboard, when there is one) on one port, no worker.

Also the composition `landscope up` serves: server.api.app:create_app, plus the Dash app
mounted at / when webapp.app provides `create_dash(api_base_url)` (a Dash app or its WSGI
server), wrapped by a2wsgi. The API's own routes are registered first, so /api/v1 and the docs
win over the mount. Imports no torch: the API never trains.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import socket
import sys
from contextlib import contextmanager

from landscope.cli.db_cmd import migrate
from server.settings import Settings, get_settings

API_PREFIX = "/api/v1"


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default LANDSCOPE_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default LANDSCOPE_PORT, 8000)")
    p.add_argument("--no-dashboard", action="store_true", help="serve the API only")
    p.add_argument("--no-migrate", action="store_true",
                   help="do not apply database migrations first")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("api", help="serve the REST API and dashboard, without a worker")
    add_serve_args(p)
    p.set_defaults(handler=run)


def public_base(host: str, port: int) -> str:
    """The URL a browser (or the dashboard's API client) on this machine uses."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def mount_dashboard(app, api_base_url: str, dev: bool = False) -> bool:
    """Mount webapp's Dash app at / if the webapp provides one; False when it does not."""
    if importlib.util.find_spec("webapp.app") is None:
        return False
    from webapp import app as webapp_app  # errors inside the webapp are real errors: raise

    create_dash = getattr(webapp_app, "create_dash", None)
    if create_dash is None:
        return False
    from a2wsgi import WSGIMiddleware

    dash = create_dash(api_base_url, dev=dev)
    app.mount("/", WSGIMiddleware(getattr(dash, "server", dash)))
    return True


def build_app(settings: Settings, base_url: str, *, dashboard: bool = True):
    """(ASGI app, whether the dashboard is mounted)."""
    from server.api.app import create_app

    app = create_app(settings)
    mounted = dashboard and mount_dashboard(app, base_url + API_PREFIX, dev=settings.dev)
    return app, mounted


def bind(host: str, port: int) -> socket.socket:
    """Bind before anything else starts, so a busy port fails fast and alone."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and accepted connections inherit the listener's proto. With proto 0 every answer on a
    # kept-alive connection waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening now: a browser opening the URL printed below waits in the backlog while
        # migrations and the first reconciler pass run, instead of being refused.
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def announce(app, base_url: str, dashboard: bool) -> None:
    if dashboard:
        print(f"landscope: dashboard    {base_url}/", file=sys.stderr)
    else:
        print("landscope: no dashboard (API only)", file=sys.stderr)
    print(f"landscope: API          {base_url}{API_PREFIX}", file=sys.stderr)
    if app.docs_url:
        print(f"landscope: API docs     {base_url}{app.docs_url}", file=sys.stderr)


@contextmanager
def sigterm_interrupts():
    """SIGTERM behaves as Ctrl-C (KeyboardInterrupt) inside this block: uvicorn re-raises the
    signal it caught once it has shut down, and SIGTERM's default action would end the
    process there, before `up` has stopped its worker, and with a failure status."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(app, sock: socket.socket, *, access_log: bool = False) -> None:
    """Serve on an already bound socket until SIGINT or SIGTERM (a graceful shutdown).
    `access_log`: a line per request (LANDSCOPE_ACCESS_LOG), else only uvicorn's own news."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level="info", lifespan="on",
                            access_log=access_log)
    try:
        with sigterm_interrupts():
            uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # the signal uvicorn re-raised after its shutdown
        pass


class ServeError(Exception):
    """Serving cannot start (the database or the port); the message says which."""


def prepare(args: argparse.Namespace):
    """Migrate, bind and build: (settings, socket, app, base url, dashboard mounted)."""
    from sqlalchemy.exc import SQLAlchemyError

    settings = get_settings()
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    if not args.no_migrate:
        try:
            migrate(settings.db_url)
        except SQLAlchemyError as exc:
            raise ServeError(f"cannot migrate the database: {exc}") from None
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc}") from None
    base_url = public_base(host, sock.getsockname()[1])
    try:
        app, mounted = build_app(settings, base_url, dashboard=not args.no_dashboard)
    except BaseException:
        sock.close()
        raise
    return settings, sock, app, base_url, mounted


def run(args: argparse.Namespace) -> int:
    try:
        settings, sock, app, base_url, mounted = prepare(args)
    except ServeError as exc:
        print(f"landscope: error: {exc}", file=sys.stderr)
        return 1
    announce(app, base_url, mounted)
    serve(app, sock, access_log=settings.access_log)
    return 0
