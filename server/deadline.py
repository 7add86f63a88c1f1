"""A request's deadline, shared by the API's edge and the layers below it.

The API's request-timeout middleware (server/api/timeouts.py) gives each request a Deadline in
a context variable; anyio copies the context into the threadpool, so the handler's thread and
everything it calls see the same object. Two uses:

- Nothing commits after the client was told 503. A thread cannot be stopped, so a handler may
  still be running when the deadline passes; the API's sessions commit inside `committing()`,
  which refuses once the deadline has expired, and the middleware, finding a commit in flight
  at the deadline, waits for its outcome rather than answer 503 for a request that succeeded.
- What a request is waiting on (the database, the broker) is noted, so the 503 can name it.

Outside a request (workers, scripts) there is no deadline and both are no-ops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

OPEN, COMMITTING, COMMITTED, EXPIRED = "open", "committing", "committed", "expired"


class RequestExpired(Exception):
    """The request's deadline passed before it could commit: its client was answered 503."""


class Deadline:
    def __init__(self, seconds: float, on_settled: Callable[[], None] | None = None) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.waiting_on: str | None = None
        self.saved_run_ids: list[int] = []
        self._on_settled = on_settled  # called, from any thread, when a commit has ended
        self._lock = threading.Lock()
        self._state = OPEN

    @property
    def state(self) -> str:
        return self._state

    def expire(self) -> str:
        """Mark the deadline passed unless a commit is in flight or done; the state after."""
        with self._lock:
            if self._state == OPEN:
                self._state = EXPIRED
            return self._state

    @contextmanager
    def committing(self) -> Iterator[None]:
        """Commit inside this block: RequestExpired if the deadline has expired already."""
        with self._lock:
            if self._state == EXPIRED:
                raise RequestExpired(
                    f"the request did not finish within {self.seconds:g} s and was answered "
                    "503: its changes are not committed"
                )
            before, self._state = self._state, COMMITTING
        done = False
        try:
            yield
            done = True
        finally:
            with self._lock:
                self._state = COMMITTED if done else before
            if self._on_settled is not None:
                self._on_settled()


current: ContextVar[Deadline | None] = ContextVar("landscope_deadline", default=None)


@contextmanager
def committing() -> Iterator[None]:
    """The current request's `Deadline.committing()`; nothing outside a request."""
    deadline = current.get()
    if deadline is None:
        yield
        return
    with deadline.committing():
        yield


@contextmanager
def waiting_on(what: str) -> Iterator[None]:
    """Note what the current request waits on for the block (for its 503, should it time
    out); the innermost wait wins."""
    deadline = current.get()
    if deadline is None:
        yield
        return
    outer, deadline.waiting_on = deadline.waiting_on, what
    try:
        yield
    finally:
        deadline.waiting_on = outer


def note_saved(run_ids: list[int]) -> None:
    """The runs this request has committed (a late 503 then names them, as saved)."""
    deadline = current.get()
    if deadline is not None:
        deadline.saved_run_ids.extend(run_ids)
