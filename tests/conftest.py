"""Shared fixtures: the machine's real PostgreSQL and Redis, and SQLite files.

PostgreSQL: every test module that asks gets a database of its own (created from the server
named by LANDSCOPE_TEST_PG, default the local `test` database's server, dropped afterwards).
Redis: tests use one database number of their own (LANDSCOPE_TEST_REDIS_DB, default 13) and
flush only that number, never the whole server. Both services must be up (.ci/run starts them);
a test that needs one fails loudly rather than skipping when it is down.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get(
    "LANDSCOPE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_DB = int(os.environ.get("LANDSCOPE_TEST_REDIS_DB", "13"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


def _pg_admin():
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(PG_ADMIN_URL)
    return psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=True
    )


def create_pg_database() -> str:
    """A new, empty PostgreSQL database; returns its SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    name = f"landscope_test_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database for this test module."""
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'landscope.db'}"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """This test run's own Redis database number, empty before and after the test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_db_url(request, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database on each backend (a fresh one per test)."""
    from server.db.migrate import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'landscope.db'}"
        upgrade(url)
        yield url
    else:
        url = create_pg_database()
        try:
            upgrade(url)
            yield url
        finally:
            drop_pg_database(url)
