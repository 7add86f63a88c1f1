"""A client-side bound on every PostgreSQL call, for a server that accepts and acknowledges
but never answers.

TCP keepalives and tcp_user_timeout notice a peer that stops acknowledging, statement_timeout
a slow query on a live server; none of them notice a peer (a frozen VM, a stalled proxy) that
acknowledges every byte and never answers: libpq would wait forever. Every psycopg call that
waits on the server (statements, fetches, commit, rollback, the pool's pre-ping) goes through
`Connection.wait()`. WatchedConnection registers each such wait with one watchdog thread,
which shuts down the socket of a connection still waiting past its deadline. The waiting
thread then sees the connection lost: psycopg raises OperationalError, SQLAlchemy invalidates
the connection (a disconnect, so the pool discards it) and the API answers 503.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

import psycopg
from sqlalchemy import Engine, event

from server.deadline import waiting_on

log = logging.getLogger("landscope.db")


class Watchdog:
    """Deadlines of the calls in flight, and one daemon thread that enforces them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy: dict[object, tuple[float, int]] = {}  # token -> (deadline, socket fd)
        self._wake_at = float("inf")  # when the thread wakes next, if nothing is added
        self._thread: threading.Thread | None = None
        self.cuts = 0

    def begin(self, fd: int, seconds: float) -> object:
        token = object()
        deadline = time.monotonic() + seconds
        with self._cond:
            self._busy[token] = (deadline, fd)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="landscope-db-watchdog")
                self._thread.start()
            if deadline < self._wake_at:  # calls of one engine share a duration: rarely
                self._cond.notify()
        return token

    def end(self, token: object) -> None:
        # Under the lock: once end() returns, the thread can no longer touch this fd (which
        # the connection may close and the system reuse for another socket).
        with self._cond:
            self._busy.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (deadline, fd) in list(self._busy.items()):
                    if deadline <= now:
                        del self._busy[token]
                        self._cut(fd)
                self._wake_at = min((d for d, _ in self._busy.values()), default=float("inf"))
                self._cond.wait(None if self._wake_at == float("inf") else self._wake_at - now)

    def _cut(self, fd: int) -> None:
        """Shut the socket down through a duplicate of its descriptor: the connection's own
        descriptor stays open (libpq closes it), the socket under both is dead."""
        self.cuts += 1
        log.warning("database call past its deadline: cutting its connection (fd %d)", fd)
        with contextlib.suppress(OSError):  # already closed by its peer: nothing to cut
            dup = socket.socket(fileno=os.dup(fd))
            with contextlib.suppress(OSError):
                dup.shutdown(socket.SHUT_RDWR)
            dup.close()


WATCHDOG = Watchdog()


class WatchedConnection(psycopg.Connection):
    """A psycopg connection whose every wait on the server is bounded by `call_seconds`."""

    call_seconds: float | None = None

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        if self.call_seconds is None:
            return super().wait(gen, *args, **kwargs)
        try:
            fd = self.pgconn.socket
        except psycopg.OperationalError:  # already lost: the call fails on its own
            return super().wait(gen, *args, **kwargs)
        token = WATCHDOG.begin(fd, self.call_seconds)
        try:
            with waiting_on("the database"):
                return super().wait(gen, *args, **kwargs)
        finally:
            WATCHDOG.end(token)


def watch_engine(engine: Engine, call_seconds: float) -> None:
    """Make `engine` (postgresql+psycopg) open WatchedConnections bounded by `call_seconds`."""

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect, _record, cargs, cparams):
        conn = WatchedConnection.connect(*cargs, **cparams)
        conn.call_seconds = call_seconds
        return conn
