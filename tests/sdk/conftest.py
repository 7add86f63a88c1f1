"""A real `landscope api` process for the SDK's tests: one that can be killed mid-run and
started again on the same port and database, as a server outage looks to the SDK."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import create_pg_database, drop_pg_database
from tests.support.processes import answers, stop_group
from tests.support.served import free_port

ROOT = Path(__file__).resolve().parents[2]
PORTS = range(18200, 18300)  # this suite's own range
DATA_ROOT = Path("/tmp/transport")


class ApiProcess:
    """`python -m landscope.cli api --no-dashboard` on a fixed port and database."""

    def __init__(self, db_url: str, data_dir: Path, token: str | None = None) -> None:
        self.db_url = db_url
        self.data_dir = data_dir
        self.token = token
        self.port = free_port(PORTS)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / "api.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCOPE_")}
        env.update(LANDSCOPE_DATA_DIR=str(self.data_dir), LANDSCOPE_DATABASE_URL=self.db_url,
                   PYTHONUNBUFFERED="1")
        if self.token:
            env["LANDSCOPE_API_TOKEN"] = self.token
        return env

    def start(self, deadline_s: float = 120) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "landscope.cli", "api", "--no-dashboard",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + deadline_s
        while not answers(self.url):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited ({self.proc.returncode}):\n"
                                   f"{self.log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "the API did not answer in time"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, a request in flight gets no answer."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> Iterator[str]:
    data = DATA_ROOT / f"db-{uuid.uuid4().hex[:8]}"
    data.mkdir(parents=True)
    if request.param == "sqlite":
        yield f"sqlite:///{data / 'landscope.db'}"
    else:
        url = create_pg_database()
        try:
            yield url
        finally:
            drop_pg_database(url)


@pytest.fixture
def data_dir() -> Path:
    d = DATA_ROOT / uuid.uuid4().hex[:10]
    d.mkdir(parents=True)
    return d


@pytest.fixture
def api(db_url: str, data_dir: Path) -> Iterator[ApiProcess]:
    server = ApiProcess(db_url, data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- reading what the server stored, straight from its database ------------------------------


def _query(db_url: str, sql: str, **params) -> list:
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as c:
            return list(c.execute(text(sql), params))
    finally:
        engine.dispose()


FLAG_VALUE = {1: math.nan, 2: math.inf, 3: -math.inf}


def stored_points(db_url: str, run_id: int) -> dict[tuple[str, int], float]:
    """(key, step) -> value of every stored point, and the row count must equal its length."""
    rows = _query(db_url, "SELECT s.key, p.step, p.value, p.flag FROM metric_points p "
                  "JOIN metric_series s ON s.id = p.series_id WHERE s.run_id = :r", r=run_id)
    out = {(k, step): (value if flag == 0 else FLAG_VALUE[flag]) for k, step, value, flag in rows}
    assert len(out) == len(rows)
    return out


def count(db_url: str, table: str, run_id: int) -> int:
    return _query(db_url, f"SELECT count(*) FROM {table} WHERE run_id = :r", r=run_id)[0][0]


def run_row(db_url: str, run_id: int) -> dict:
    (row,) = _query(db_url, "SELECT status, source, step, error, client_id, name, total "
                    "FROM runs WHERE id = :r", r=run_id)
    return dict(row._mapping)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b
