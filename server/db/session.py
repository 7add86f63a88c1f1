"""Engines and sessions. Services take a Session and never commit; the request edge does."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from server.deadline import committing

log = logging.getLogger("landscope.db")
T = TypeVar("T")


def make_engine(url: str, *, statement_timeout: float | None = None, connect_timeout: int = 5,
                pool_timeout: float | None = None, **kwargs) -> Engine:
    """An engine tuned per backend.

    SQLite: WAL so the API reads while a worker writes, a busy timeout instead of instant
    'database is locked' errors (`statement_timeout`, else 30 s), and foreign keys on (they
    are off by default there).
    PostgreSQL: pre-ping so a restarted server costs one retry, not an error; a connect
    timeout and TCP keepalives, so an unreachable or vanished server is an error, not a hang.
    With `statement_timeout` (seconds): the server cancels longer statements, and a call that
    gets no answer for a second longer has its connection cut (server/db/watchdog.py): a
    server that acknowledges but never answers cannot hang the caller. The API bounds its
    statements tightly, workers (bulk metric inserts) loosely; None: no bound, for
    migrations and scripts. `pool_timeout`: how long to wait for a free pooled connection.
    """
    u = make_url(url)
    in_memory = u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")
    if pool_timeout is not None and not in_memory:  # (an in-memory database has no queue)
        kwargs.setdefault("pool_timeout", pool_timeout)
    if u.get_backend_name() == "sqlite":
        if not in_memory:
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        busy = 30.0 if statement_timeout is None else statement_timeout
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": busy})
        engine = create_engine(url, **kwargs)
        pragmas = functools.partial(_sqlite_pragmas, busy_ms=int(busy * 1000))
        event.listen(engine, "connect", pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if u.get_backend_name() == "postgresql":
        kwargs.setdefault("connect_args", _pg_connect_args(u, statement_timeout, connect_timeout))
    engine = create_engine(url, **kwargs)
    if statement_timeout is not None and u.get_driver_name() == "psycopg":
        from server.db.watchdog import watch_engine

        watch_engine(engine, statement_timeout + WATCHDOG_GRACE_S)
    return engine


# The watchdog cuts a call this long after the server should have cancelled it, so a live
# server's own statement_timeout error (a clear message, the connection kept) comes first.
WATCHDOG_GRACE_S = 1.0
# Keepalives: an idle connection to a vanished host is found dead in about 5 + 3 x 2 s;
# tcp_user_timeout: so is a busy one whose sent data stays unacknowledged for 10 s.
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                 "keepalives_count": 3, "tcp_user_timeout": 10_000}


def _pg_connect_args(u, statement_timeout: float | None, connect_timeout: int) -> dict:
    args: dict = {"connect_timeout": connect_timeout, **PG_KEEPALIVES}
    if statement_timeout is not None:
        ms = max(1, int(statement_timeout * 1000))
        # A transaction left open and idle (a stuck client) holds its locks and snapshot:
        # the server ends its session instead.
        idle_ms = max(60_000, 2 * ms)
        options = f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout={idle_ms}"
        given = u.query.get("options")  # the URL's own ?options=... are kept, ours added
        args["options"] = f"{given} {options}" if given else options
    return args


def _sqlite_pragmas(dbapi_conn, _record, busy_ms: int = 30_000) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class RequestSession(Session):
    """The API's session: it never commits for a request whose client was already answered
    503 (server/deadline.py); RequestExpired instead, and the request's work is rolled back."""

    def commit(self) -> None:
        with committing():
            super().commit()


def make_sessionmaker(engine: Engine, class_: type[Session] = Session) -> sessionmaker[Session]:
    return sessionmaker(engine, class_=class_, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error (for workers and scripts)."""
    with factory() as session, session.begin():
        yield session


def is_transient(exc: BaseException) -> bool:
    """An error that waiting can cure: the server unreachable, a dropped connection, or
    SQLite's 'database is locked'. Constraint violations and bad SQL are not."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def with_retries(fn: Callable[[], T], *, deadline_s: float, what: str = "database write",
                 first_delay: float = 0.2, max_delay: float = 5.0) -> T:
    """fn(), retried with exponential backoff on transient errors for up to `deadline_s`
    seconds; after that (or on any other error) the error propagates."""
    start = time.monotonic()
    delay = first_delay
    while True:
        try:
            return fn()
        except Exception as exc:
            waited = time.monotonic() - start
            if not is_transient(exc) or waited + delay > deadline_s:
                raise
            log.warning("%s failed (%s); retrying in %.1f s", what, exc.__class__.__name__, delay)
            time.sleep(delay)
            delay = min(max_delay, 2 * delay)
