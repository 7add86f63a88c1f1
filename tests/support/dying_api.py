"""A real API server that dies (os._exit) right after the commit of any request whose
Idempotency-Key header is $DIE_AFTER_COMMIT_KEY: the run is saved, the client never hears.

Run as `python -m tests.support.dying_api` with the LANDSCOPE_ settings in the environment;
it listens on a free port and announces it as `landscope api` does.
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar

from sqlalchemy import event
from sqlalchemy.orm import Session

from landscope.cli.api_cmd import announce, bind, public_base, serve
from server.api.app import create_app
from server.settings import get_settings

DIED = 77  # the exit status a test can recognise
_request_key: ContextVar[str | None] = ContextVar("request_key", default=None)


class RememberKey:
    """ASGI middleware: the request's Idempotency-Key, for code deeper down the same request
    (contextvars follow the request into the thread pool that runs the handler)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            key = dict(scope["headers"]).get(b"idempotency-key")
            _request_key.set(key.decode("latin-1") if key is not None else None)
        await self.app(scope, receive, send)


def die_after_commit(key: str) -> None:
    def check(_session: Session) -> None:
        if _request_key.get() == key:
            os._exit(DIED)  # no cleanup, no answer: as if the host lost power

    event.listen(Session, "after_commit", check)


def main() -> None:
    die_after_commit(os.environ["DIE_AFTER_COMMIT_KEY"])
    app = create_app(get_settings())
    app.add_middleware(RememberKey)
    sock = bind("127.0.0.1", 0)
    base_url = public_base("127.0.0.1", sock.getsockname()[1])
    announce(app, base_url, dashboard=False)
    sys.stderr.flush()
    serve(app, sock)


if __name__ == "__main__":
    main()
