"""Database blips, through a TCP proxy in front of the real PostgreSQL that the test cuts:
the worker buffers and retries with backoff, and a run cut off mid-training still ends with
exactly the metrics of an uninterrupted run; the API answers 503 meanwhile and recovers."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from server.db.migrate import upgrade
from server.db.models import Point, Run
from server.db.session import make_engine
from server.settings import Settings
from tests.support.tcp_proxy import TcpProxy
from worker.runner import execute_run
from worker.sql_sink import SqlSink

from .conftest import create_run, tiny_spec


@pytest.fixture
def proxied(pg_url):
    """The module's PostgreSQL database, reached through a proxy the test controls."""
    upgrade(pg_url)
    u = make_url(pg_url)
    proxy = TcpProxy(u.host, u.port or 5432)
    url = u.set(port=proxy.port).render_as_string(hide_password=False)
    yield SimpleNamespace(proxy=proxy, url=url, direct=pg_url)
    proxy.close()


def blink(proxy: TcpProxy, after: float, down_for: float) -> threading.Thread:
    def run():
        time.sleep(after)
        proxy.cut()
        time.sleep(down_for)
        proxy.restore()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_metric_write_waits_out_an_outage(proxied):
    engine = make_engine(proxied.url)
    run_id = create_run(proxied.direct, tiny_spec())
    sink = SqlSink(engine, run_id, flush_seconds=3600, outage_seconds=30)
    sink.scalars(0, {"a": 1.0})
    sink.flush()  # the connection is in the pool now: the cut must break it
    proxied.proxy.cut()
    restorer = threading.Timer(1.5, proxied.proxy.restore)
    restorer.start()
    started = time.monotonic()
    sink.scalars(1, {"a": 2.0})
    sink.flush()  # fails while cut, retries, succeeds once restored
    assert time.monotonic() - started >= 1.0
    sink.close()
    with make_engine(proxied.direct).connect() as c:
        assert c.scalar(select(func.count()).select_from(Point)) == 2
    engine.dispose()


def test_without_retry_budget_the_error_reaches_the_caller(proxied):
    engine = make_engine(proxied.url)
    run_id = create_run(proxied.direct, tiny_spec())
    sink = SqlSink(engine, run_id, flush_seconds=3600, outage_seconds=0)
    proxied.proxy.cut()
    sink.scalars(0, {"a": 1.0})
    with pytest.raises(Exception):  # noqa: B017 - psycopg's or SQLAlchemy's, both fine
        sink.flush()
    assert sink.pending() == 1  # kept for the next attempt
    proxied.proxy.restore()
    sink.close()
    engine.dispose()


def test_a_run_cut_off_mid_training_finishes_with_every_metric(
    proxied, tmp_path, stored, memory_reference, same_metrics
):
    spec = tiny_spec(steps=300)
    run_id = create_run(proxied.direct, spec)
    settings = Settings(data_dir=tmp_path, database_url=proxied.url, sink_flush_seconds=0.2,
                        heartbeat_seconds=0.5, db_outage_seconds=60)
    engine = make_engine(proxied.url)
    # Down from 1 s to 7 s: most likely past the end of training (~2-4 s here), so the last
    # metric writes and the final state write must wait the outage out.
    blinker = blink(proxied.proxy, after=1.0, down_for=6.0)
    outcome = execute_run(run_id, settings=settings, engine=engine, worker="w@h", device="cpu")
    blinker.join()
    engine.dispose()
    assert outcome == "succeeded"
    got = stored(proxied.direct, run_id)
    assert got.run.status == "succeeded" and got.run.step == 300
    same_metrics(got, memory_reference(spec))


def test_the_api_answers_503_while_the_database_is_away_and_recovers(proxied, tmp_path):
    from server.api.app import create_app

    run_id = create_run(proxied.direct, tiny_spec())
    settings = Settings(data_dir=tmp_path, database_url=proxied.url,
                        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/api/v1/runs/{run_id}").status_code == 200
        proxied.proxy.cut()
        r = client.get(f"/api/v1/runs/{run_id}")
        assert r.status_code == 503, r.text
        assert client.get("/api/v1/health").status_code == 503
        proxied.proxy.restore()
        deadline = time.monotonic() + 10
        while (code := client.get(f"/api/v1/runs/{run_id}").status_code) != 200:
            assert time.monotonic() < deadline, code
            time.sleep(0.2)
    with make_engine(proxied.direct).connect() as c:
        assert c.scalar(select(func.count()).select_from(Run).where(Run.id == run_id)) == 1
