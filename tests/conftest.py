"""Shared fixtures: the machine's real PostgreSQL and Redis, and SQLite files.

PostgreSQL: every test module that asks gets a database of its own (created from the server
named by LANDSCOPE_TEST_PG, default the local `test` database's server, dropped afterwards).
Redis: tests use the database number LANDSCOPE_TEST_REDIS_DB (default 15), and in it each test
a key prefix of its own (LANDSCOPE_BROKER_KEY_PREFIX for the broker): a test deletes only the
keys under its prefix, never flushes, so a deployment or a second test run sharing that
database loses nothing. Both services must be up (.ci/run starts them); a test that needs one
fails loudly rather than skipping when it is down.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get(
    "LANDSCOPE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_DB = int(os.environ.get("LANDSCOPE_TEST_REDIS_DB", "15"))
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


@dataclass(frozen=True)
class RedisSpace:
    """One test's share of the test Redis database: the keys under `prefix`."""

    url: str
    prefix: str

    def settings(self) -> dict[str, Any]:
        """The Settings fields of a broker in this space."""
        return {"broker_url": self.url, "broker_key_prefix": self.prefix}

    def own_keys(self) -> list[bytes]:
        import redis

        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "*"
        with redis.Redis.from_url(self.url) as r:
            return list(r.scan_iter(match=pattern, count=1000))

    def clear(self) -> int:
        """Delete this space's keys and no other: the broker flush a test may simulate."""
        import redis

        keys = self.own_keys()
        if not keys:
            return 0
        with redis.Redis.from_url(self.url) as r:
            return r.delete(*keys)


@pytest.fixture
def redis_space() -> Iterator[RedisSpace]:
    """A key prefix of this test's own in the test Redis database, its keys deleted after."""
    space = RedisSpace(REDIS_URL, f"landscope-test-{uuid.uuid4().hex[:12]}:")
    yield space
    space.clear()


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


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Every test starts with torch at the engine's default thread count (one: what a worker
    process uses between runs, worker/engine/threads.py), set only once torch is imported, so
    a test comparing a Trainer's numbers bit for bit with a computation of its own compares
    the same arithmetic, and no test's count leaks into the next."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
