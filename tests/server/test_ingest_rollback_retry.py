"""A batch that PostgreSQL rolls back to break a deadlock is written again, not answered 503.

Concurrent batches of one SDK run upsert the same rollup buckets in an order the database
picks, so two of them can deadlock; PostgreSQL then rolls one back (SQLSTATE 40P01). CI once
saw test_ingest_live's overlapping clients get '503 the database cannot be reached' for it.
Here a real deadlock is made on PostgreSQL, its error is classified, and the route is shown to
retry a batch that such an error rolled back."""

from __future__ import annotations

import gzip
import json
import threading

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from server.api.routers import sdk as sdk_router
from server.services import ingest
from tests.support.live_api import live_api


def _real_deadlock(url: str) -> OperationalError:
    """Two transactions locking two rows in opposite orders: PostgreSQL aborts one."""
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(text("CREATE TABLE IF NOT EXISTS dl_rows (id int PRIMARY KEY, v int)"))
            c.execute(text("INSERT INTO dl_rows VALUES (1, 0), (2, 0) ON CONFLICT DO NOTHING"))
        a, b = engine.connect(), engine.connect()
        errors: list[OperationalError] = []
        first_locked = threading.Event()
        try:
            ta, tb = a.begin(), b.begin()
            a.execute(text("UPDATE dl_rows SET v = v + 1 WHERE id = 1"))
            b.execute(text("UPDATE dl_rows SET v = v + 1 WHERE id = 2"))

            def a_wants_2() -> None:
                first_locked.set()
                try:
                    a.execute(text("UPDATE dl_rows SET v = v + 1 WHERE id = 2"))
                except OperationalError as exc:
                    errors.append(exc)

            t = threading.Thread(target=a_wants_2)
            t.start()
            first_locked.wait(10)
            try:
                b.execute(text("UPDATE dl_rows SET v = v + 1 WHERE id = 1"))
            except OperationalError as exc:
                errors.append(exc)
            if not errors:  # b won: a was the victim; its error arrives with its thread
                tb.rollback()
            t.join(30)
            for tx in (ta, tb):
                if tx.is_active:
                    tx.rollback()
        finally:
            a.close()
            b.close()
        assert len(errors) == 1, errors
        return errors[0]
    finally:
        engine.dispose()


def test_a_real_deadlock_is_a_rollback_to_retry_and_a_lost_server_is_not(pg_url):
    err = _real_deadlock(pg_url)
    assert err.orig.sqlstate == "40P01"
    assert sdk_router._rolled_back(err)
    unreachable = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(OperationalError) as lost:
        unreachable.connect()
    unreachable.dispose()
    assert not sdk_router._rolled_back(lost.value)  # still a 503: nothing to retry against


def test_the_route_writes_a_rolled_back_batch_again(backend, pg_url, monkeypatch):
    if backend.db_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: nothing is rolled back for a deadlock")
    deadlock = _real_deadlock(pg_url)
    real_store = ingest.store
    calls: list[int] = []

    def store_deadlocking_once(session, run_id, batch):
        calls.append(run_id)
        real_store(session, run_id, batch)
        if len(calls) == 1:  # after writing: the whole transaction must be rolled back
            raise deadlock

    monkeypatch.setattr(ingest, "store", store_deadlocking_once)
    body = {"scalars": [{"key": "loss", "steps": [0, 1, 2], "values": [1.0, "NaN", 0.5]}],
            "heartbeat": {"step": 2, "last_loss": 0.5}}
    with live_api(backend, dashboard=False) as api, httpx.Client(base_url=api.url,
                                                                 timeout=60) as http:
        rid = http.post("/api/v1/sdk/runs", json={"client_id": "7" * 32,
                                                  "name": "retry"}).json()["id"]
        r = http.post(f"/api/v1/runs/{rid}/ingest", content=gzip.compress(
            json.dumps(body).encode()), headers={"Content-Encoding": "gzip"})
        assert r.status_code == 200, r.text
        assert len(calls) == 2 and r.json()["points"] == 3
        got = http.get(f"/api/v1/runs/{rid}/metrics", params={"keys": "loss"}).json()
        assert got["series"]["loss"]["values"] == [1.0, "NaN", 0.5]
        assert http.get(f"/api/v1/runs/{rid}").json()["step"] == 3
