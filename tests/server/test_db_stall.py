"""A database (or broker) that stops answering without closing anything, through a TCP proxy in
front of the real PostgreSQL (and Redis) that the test puts in blackhole mode: connections are
accepted and acknowledged, nothing is forwarded. A real server (uvicorn) serves the API.

/health answers 503 within 2 s naming what does not answer; other requests answer 503 within
the request timeout; once the proxy forwards again requests succeed; and a request answered 503
never commits, even when its stuck statement completes after the database comes back.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from server.db.migrate import upgrade
from server.db.models import Run
from server.db.session import make_engine
from server.settings import Settings
from tests.support.live_api import live_api
from tests.support.tcp_proxy import TcpProxy

SLACK = 3.0  # a slow, shared CI machine


@pytest.fixture
def stalling(pg_url, redis_space, tmp_path):
    """The module's PostgreSQL database and the test's Redis space, each behind a proxy."""
    upgrade(pg_url)
    with make_engine(pg_url).begin() as conn:  # the module's database is shared: start empty
        conn.execute(Run.__table__.delete())
    u, r = make_url(pg_url), make_url(redis_space.url)
    db, broker = TcpProxy(u.host, u.port or 5432), TcpProxy(r.host, r.port or 6379)
    settings = Settings(
        _env_file=None, data_dir=tmp_path, **redis_space.settings(),
    ).model_copy(update={
        "database_url": u.set(port=db.port).render_as_string(hide_password=False),
        "broker_url": r.set(port=broker.port).render_as_string(hide_password=False),
    })
    yield SimpleNamespace(db=db, broker=broker, settings=settings, direct=pg_url)
    db.close()
    broker.close()


def runs_in(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Run))
    finally:
        engine.dispose()


def timed(client: httpx.Client, method: str, path: str, **kw) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = client.request(method, path, **kw)
    return r, time.monotonic() - started


def wait_until_ok(client: httpx.Client, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (code := client.get(path).status_code) != 200:
        assert time.monotonic() < deadline, f"{path} still answers {code}"
        time.sleep(0.2)


def settle(api) -> None:
    """Wait until every request's session is back in the pool: a session closed after its
    answer (a rollback) must not straddle the blackhole's start."""
    pool = api.app.state.engine.pool
    deadline = time.monotonic() + 30
    while pool.checkedout():
        assert time.monotonic() < deadline, "connections still checked out"
        time.sleep(0.05)


def test_a_silent_database_gives_bounded_503s_and_the_api_recovers(stalling):
    with live_api(stalling.settings, dashboard=False) as api, \
            httpx.Client(base_url=api.url, timeout=60) as c:
        assert c.get("/api/v1/health").status_code == 200
        assert c.post("/api/v1/runs", json={"name": "before"}).status_code == 201
        settle(api)
        stalling.db.blackhole()
        health, took = timed(c, "GET", "/api/v1/health")
        assert health.status_code == 503 and took < 2.0, (health.text, took)
        assert health.json()["database"]["ok"] is False
        assert "not answering" in health.json()["database"]["error"]
        assert health.json()["broker"] == {"ok": True, "error": None}
        # Its check is still stuck (its pooled connection's ping is cut at 6 s): reported as
        # not answering again, and no second check was started.
        again, took = timed(c, "GET", "/health")
        assert again.status_code == 503 and took < 2.0, (again.text, took)
        assert "not answering (no answer for 3" in again.json()["database"]["error"]
        assert len([t for t in threading.enumerate() if t.name == "health-database"]) == 1
        with ThreadPoolExecutor(2) as pool:
            listed = pool.submit(timed, c, "GET", "/api/v1/runs")
            posted = pool.submit(timed, c, "POST", "/api/v1/runs", json={"name": "during"})
            for future in (listed, posted):
                r, took = future.result()
                assert r.status_code == 503 and took < 10 + SLACK, (r.text, took)
                assert "database" in r.json()["detail"]
        stalling.db.restore()
        wait_until_ok(c, "/api/v1/runs")
        wait_until_ok(c, "/api/v1/health")
        assert c.post("/api/v1/runs", json={"name": "after"}).status_code == 201
    # Shut down, so every request answered 503 has ended: only "before" and "after" exist.
    assert runs_in(stalling.direct) == 2


def test_a_request_answered_503_never_commits_when_the_database_comes_back(stalling, caplog):
    # A short request deadline and a statement bound far beyond it: the stuck statement is
    # not cut, it completes once the proxy forwards again, and the handler goes on to commit.
    settings = stalling.settings.model_copy(update={
        "request_timeout_seconds": 2.0, "db_statement_timeout_seconds": 60.0})
    caplog.set_level(logging.INFO, logger="landscope.api")
    with live_api(settings, dashboard=False) as api, \
            httpx.Client(base_url=api.url, timeout=60) as c:
        assert c.post("/api/v1/runs", json={"name": "before"}).status_code == 201
        settle(api)
        stalling.db.blackhole()
        r, took = timed(c, "POST", "/api/v1/runs", json={"name": "late"})
        assert r.status_code == 503 and took < 2 + SLACK, (r.text, took)
        assert r.headers["retry-after"] == "5"
        assert r.json()["detail"] == ("the request did not finish within 2 s (waiting on the "
                                      "database); nothing was changed, try again later")
        stalling.db.restore()
        wait_until_ok(c, "/api/v1/runs")
    # The server's shutdown waited for the late handler: it reached its commit and was refused.
    refused = [rec for rec in caplog.records if "its changes are not committed" in rec.message]
    assert len(refused) == 1
    assert runs_in(stalling.direct) == 1


def test_a_silent_broker_is_named_by_health_within_2_s(stalling):
    with live_api(stalling.settings, dashboard=False) as api, \
            httpx.Client(base_url=api.url, timeout=60) as c:
        assert c.get("/api/v1/health").status_code == 200
        stalling.broker.blackhole()
        for _ in range(3):
            r, took = timed(c, "GET", "/health")
            assert r.status_code == 503 and took < 2.0, (r.text, took)
            assert r.json()["database"] == {"ok": True, "error": None}
            assert "not answering" in r.json()["broker"]["error"]
        assert len([t for t in threading.enumerate() if t.name == "health-broker"]) == 1
        stalling.broker.restore()
        wait_until_ok(c, "/health")
