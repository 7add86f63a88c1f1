"""A real HTTP server in this process: uvicorn serving what `landscope api` serves (the API and,
unless asked otherwise, the dashboard mounted at /), on a port the system picks, on a thread.

For tests that need real sockets (a body streamed in chunks, a client that gives up) without
the cost of a subprocess. The socket listens before the thread starts, so requests made at
once wait in the backlog until the server accepts them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from landscope.cli.api_cmd import bind, build_app, public_base
from server.settings import Settings


@dataclass
class LiveApi:
    port: int
    url: str  # http://127.0.0.1:<port>
    app: object


@contextmanager
def live_api(settings: Settings, *, dashboard: bool = True) -> Iterator[LiveApi]:
    sock = bind("127.0.0.1", 0)
    base = public_base("127.0.0.1", sock.getsockname()[1])
    app, _ = build_app(settings, base, dashboard=dashboard)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="live-api")
    thread.start()
    try:
        yield LiveApi(port=sock.getsockname()[1], url=base, app=app)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"
