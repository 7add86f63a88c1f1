"""API fixtures: a TestClient over a real database and a real broker.

`backend` pairs SQLite with the embedded broker (kombu's SQL transport on a SQLite file) and
PostgreSQL with Redis (under a key prefix of the test's own), as the two deployments do;
`sqlite_app` is the cheap single pairing for tests that do not depend on the backend.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from server.db.models import Run, utcnow
from server.db.session import make_engine, make_sessionmaker
from server.settings import Settings


def make_settings(tmp_path: Path, db_url: str, broker_url: str, **limits: Any) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path, database_url=db_url, broker_url=broker_url, **limits
    )


@pytest.fixture
def backend(request, migrated_db_url: str, tmp_path: Path) -> Settings:
    if migrated_db_url.startswith("sqlite"):
        return make_settings(tmp_path, migrated_db_url, f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    space = request.getfixturevalue("redis_space")
    return make_settings(tmp_path, migrated_db_url, space.url,
                         broker_key_prefix=space.prefix)


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Settings:
    from server.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'landscope.db'}"
    upgrade(url)
    return make_settings(tmp_path, url, f"sqla+sqlite:///{tmp_path / 'broker.db'}")


def _client(settings: Settings) -> Iterator[TestClient]:
    from server.api.app import create_app

    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(backend: Settings) -> Iterator[TestClient]:
    yield from _client(backend)


@pytest.fixture
def sqlite_client(sqlite_backend: Settings) -> Iterator[TestClient]:
    yield from _client(sqlite_backend)


@pytest.fixture
def api_db(backend: Settings) -> Iterator[Engine]:
    """A second engine on the client's database, to arrange and inspect rows directly."""
    eng = make_engine(backend.db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def make_run(api_db: Engine) -> Callable[..., int]:
    """Insert a run row in any state (as a worker would have left it); returns its id."""

    def make(**fields: Any) -> int:
        row = {"name": "r", "spec": {}, "queue": "landscope.any", "total": 100, **fields}
        if row.get("status") == "running":  # a live worker beats; else the reconciler requeues
            row.setdefault("heartbeat_at", utcnow())
        with make_sessionmaker(api_db).begin() as session:
            run = Run(**row)
            session.add(run)
            session.flush()
            return run.id

    return make


@pytest.fixture
def broker_messages(backend: Settings) -> Callable[[str], list[tuple[str, list]]]:
    """(task name, args) of every message waiting in a queue, read from the broker's storage
    (the Redis list, or the embedded broker's message table) without consuming it."""

    def read(queue: str) -> list[tuple[str, list]]:
        if backend.broker.startswith("redis"):
            import redis

            with redis.Redis.from_url(backend.broker) as r:
                # kombu pushes on the left and pops on the right: oldest last.
                prefixed = backend.broker_key_prefix + queue
                payloads = list(reversed(r.lrange(prefixed, 0, -1)))
        else:
            path = backend.broker.removeprefix("sqla+sqlite:///")
            with closing(sqlite3.connect(path)) as conn:
                if not _has_table(conn, "kombu_message"):  # nothing was ever sent
                    return []
                payloads = [
                    p for (p,) in conn.execute(
                        "SELECT m.payload FROM kombu_message m JOIN kombu_queue q "
                        "ON q.id = m.queue_id WHERE q.name = ? AND m.visible ORDER BY m.id",
                        (queue,),
                    )
                ]
        out = []
        for payload in payloads:
            msg = json.loads(payload)
            args = json.loads(base64.b64decode(msg["body"]))[0]
            out.append((msg["headers"]["task"], args))
        return out

    return read


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(query, (name,)).fetchone() is not None
