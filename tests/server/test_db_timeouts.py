"""make_engine's bounds on the database: PostgreSQL's own statement and idle-transaction
timeouts, a client-side watchdog for a server that acknowledges but never answers (through a
blackholing TCP proxy in front of the real PostgreSQL), and SQLite's lock wait."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from server.db.migrate import upgrade
from server.db.models import Run
from server.db.session import make_engine
from server.db.watchdog import WATCHDOG
from tests.support.tcp_proxy import TcpProxy

SLACK = 3.0  # a slow, shared CI machine


@pytest.fixture
def proxied(pg_url):
    """(proxy, URL through it) to the module's migrated PostgreSQL database."""
    upgrade(pg_url)
    u = make_url(pg_url)
    proxy = TcpProxy(u.host, u.port or 5432)
    yield proxy, u.set(port=proxy.port).render_as_string(hide_password=False)
    proxy.close()


def elapsed(since: float) -> float:
    return time.monotonic() - since


def test_the_server_cancels_a_statement_over_the_bound_and_keeps_the_connection(pg_url):
    engine = make_engine(pg_url, statement_timeout=1.0)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SHOW statement_timeout")) == "1s"
            assert conn.scalar(text("SHOW idle_in_transaction_session_timeout")) == "1min"
            started = time.monotonic()
            with pytest.raises(OperationalError, match="statement timeout") as err:
                conn.execute(text("SELECT pg_sleep(5)"))
            assert elapsed(started) < 1 + SLACK
            assert not err.value.connection_invalidated  # the server answered: no cut
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT 1")) == 1
    finally:
        engine.dispose()


def test_without_a_bound_nothing_is_set(pg_url):
    engine = make_engine(pg_url)  # migrations and scripts
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SHOW statement_timeout")) == "0"
    finally:
        engine.dispose()


def test_a_statement_on_a_silent_server_is_cut_and_the_engine_recovers(proxied):
    proxy, url = proxied
    engine = make_engine(url, statement_timeout=1.0, connect_timeout=2)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT 1")) == 1
            proxy.blackhole()
            cuts, started = WATCHDOG.cuts, time.monotonic()
            with pytest.raises(OperationalError) as err:
                conn.execute(text("SELECT 2"))
            # Cut by the watchdog one second after the server should have cancelled it.
            assert 1.9 < elapsed(started) < 2 + SLACK
            assert WATCHDOG.cuts == cuts + 1
            assert err.value.connection_invalidated
        proxy.restore()
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT 3")) == 3
    finally:
        engine.dispose()


def test_the_pre_ping_and_a_commit_are_bounded_too(proxied):
    proxy, url = proxied
    engine = make_engine(url, statement_timeout=1.0, connect_timeout=2)
    try:
        with engine.connect() as conn:  # a connection in the pool, pinged on the next checkout
            conn.execute(text("SELECT 1"))
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(OperationalError), engine.connect():
            pass
        # The ping is cut at 2 s; the pool then opens a new connection: 2 s connect timeout.
        assert elapsed(started) < 4 + SLACK
        proxy.restore()

        with Session(engine) as session:
            session.execute(insert(Run).values(name="r", spec={}, queue="q", total=1))
            proxy.blackhole()
            started = time.monotonic()
            with pytest.raises(OperationalError):
                session.commit()
            assert elapsed(started) < 2 + SLACK
        # (Whether that commit took effect is unknown, as for any commit whose answer is lost:
        # the proxy delivers the held COMMIT once restored.)
        proxy.restore()
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT 1")) == 1
    finally:
        engine.dispose()


def test_a_wait_for_a_pooled_connection_gives_up(pg_url):
    engine = make_engine(pg_url, pool_timeout=0.5, pool_size=1, max_overflow=0)
    try:
        with engine.connect():  # the pool's only connection, busy
            started = time.monotonic()
            with pytest.raises(PoolTimeout), engine.connect():
                pass
            assert 0.4 < elapsed(started) < 0.5 + SLACK
    finally:
        engine.dispose()


def test_sqlite_waits_for_a_lock_no_longer_than_the_bound(tmp_path):
    path = tmp_path / "db.sqlite"
    engine = make_engine(f"sqlite:///{path}", statement_timeout=0.5)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"), engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
        assert 0.4 < elapsed(started) < 0.5 + SLACK
    finally:
        holder.close()
        engine.dispose()
