"""Engines and sessions. Services take a Session and never commit; the request edge does."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("landscope.db")
T = TypeVar("T")


def make_engine(url: str, **kwargs) -> Engine:
    """An engine tuned per backend.

    SQLite: WAL so the API reads while a worker writes, a busy timeout instead of instant
    'database is locked' errors, and foreign keys on (they are off by default there).
    PostgreSQL: pre-ping so a restarted server costs one retry, not an error.
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if u.get_backend_name() == "postgresql":
        # Fail fast when the server is unreachable: the API answers 503, not a hang.
        kwargs.setdefault("connect_args", {"connect_timeout": 5})
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


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
