"""The ingest route over real sockets (uvicorn in this process), on SQLite and PostgreSQL:
gzip batches from several clients at once, overlapping and resent, with heartbeats, store
each point exactly once and never deadlock; a streamed body past LANDSCOPE_MAX_INGEST_MB is
refused as it passes the limit; a run deleted while batches arrive leaves no orphans."""

from __future__ import annotations

import gzip
import json
import threading

import httpx
from sqlalchemy import text

from tests.support.live_api import live_api

N_CLIENTS = 4
BATCHES = 10
STEPS = 500  # per batch and key


def _batch(i: int) -> bytes:
    # Batches overlap by half: batch i covers steps [i*STEPS/2, i*STEPS/2 + STEPS).
    lo = i * STEPS // 2
    steps = list(range(lo, lo + STEPS))
    body = {"scalars": [{"key": f"k{k}", "steps": steps,
                         "values": [s * 0.5 if s % 7 else "NaN" for s in steps]}
                        for k in range(4)],
            "heartbeat": {"step": steps[-1], "last_loss": 1.0}}
    return gzip.compress(json.dumps(body).encode())


def test_concurrent_overlapping_batches_store_each_point_once(backend):
    with live_api(backend, dashboard=False) as api, httpx.Client(base_url=api.url,
                                                                 timeout=60) as http:
        rid = http.post("/api/v1/sdk/runs", json={"client_id": "9" * 32,
                                                  "name": "live"}).json()["id"]
        errors: list[str] = []

        def send(client_no: int) -> None:
            with httpx.Client(base_url=api.url, timeout=60) as c:
                for i in range(BATCHES):  # every client sends every batch: 4 copies of each
                    j = (i + client_no * 3) % BATCHES
                    r = c.post(f"/api/v1/runs/{rid}/ingest", content=_batch(j),
                               headers={"Content-Encoding": "gzip"})
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text}")

        threads = [threading.Thread(target=send, args=(n,)) for n in range(N_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors[:3]
        last = (BATCHES - 1) * STEPS // 2 + STEPS - 1
        run = http.get(f"/api/v1/runs/{rid}").json()
        assert (run["status"], run["step"]) == ("running", last + 1)  # steps done
        series = http.get(f"/api/v1/runs/{rid}/metrics",
                          params={"keys": "k0,k3", "max_points": 100_000}).json()["series"]
        for key in ("k0", "k3"):
            assert series[key]["steps"] == list(range(last + 1))
            assert series[key]["values"][7] == "NaN" and series[key]["values"][8] == 4.0
        engine_url = backend.db_url
    from server.db.session import make_engine

    engine = make_engine(engine_url)
    try:
        with engine.connect() as c:
            n = c.scalar(text("SELECT count(*) FROM metric_points p JOIN metric_series s "
                              "ON s.id = p.series_id WHERE s.run_id = :r"), {"r": rid})
            rolled = c.scalar(text("SELECT sum(n) FROM metric_rollups r JOIN metric_series s "
                                   "ON s.id = r.series_id WHERE s.run_id = :r AND level = 1"),
                              {"r": rid})
        assert n == rolled == 4 * (last + 1)  # rollups exact under concurrent duplicates
    finally:
        engine.dispose()


def test_a_streamed_body_past_the_ingest_limit_is_refused(backend):
    settings = backend.model_copy(update={"max_ingest_mb": 0.05})  # 52 KB
    with live_api(settings, dashboard=False) as api, httpx.Client(base_url=api.url,
                                                                  timeout=60) as http:
        rid = http.post("/api/v1/sdk/runs", json={"client_id": "8" * 32,
                                                  "name": "big"}).json()["id"]

        def chunks():
            for _ in range(100):  # 100 KB, no Content-Length
                yield b" " * 1024

        r = http.post(f"/api/v1/runs/{rid}/ingest", content=chunks())
        assert r.status_code == 413 and "LANDSCOPE_MAX_INGEST_MB" in r.json()["detail"]
        r = http.post(f"/api/v1/runs/{rid}/ingest", content=b"{}")
        assert r.status_code == 200


def test_deleting_a_run_while_batches_arrive_leaves_no_orphans(backend):
    with live_api(backend, dashboard=False) as api, httpx.Client(base_url=api.url,
                                                                 timeout=60) as http:
        rid = http.post("/api/v1/sdk/runs", json={"client_id": "7" * 32,
                                                  "name": "doomed"}).json()["id"]
        http.post(f"/api/v1/runs/{rid}/finish", json={"status": "succeeded"})
        statuses: list[int] = []
        started = threading.Event()

        def send() -> None:
            with httpx.Client(base_url=api.url, timeout=60) as c:
                for i in range(BATCHES):
                    statuses.append(c.post(f"/api/v1/runs/{rid}/ingest", content=_batch(i),
                                           headers={"Content-Encoding": "gzip"}).status_code)
                    started.set()

        t = threading.Thread(target=send)
        t.start()
        assert started.wait(60)
        assert http.delete(f"/api/v1/runs/{rid}").status_code == 204
        t.join(120)
        assert set(statuses) <= {200, 404} and 200 in statuses, statuses
        engine_url = backend.db_url
    from server.db.session import make_engine

    engine = make_engine(engine_url)
    try:
        with engine.connect() as c:
            orphans = c.scalar(text(
                "SELECT count(*) FROM metric_points p WHERE NOT EXISTS "
                "(SELECT 1 FROM metric_series s WHERE s.id = p.series_id)"))
            rollups = c.scalar(text(
                "SELECT count(*) FROM metric_rollups r WHERE NOT EXISTS "
                "(SELECT 1 FROM metric_series s WHERE s.id = r.series_id)"))
        assert (orphans, rollups) == (0, 0)
    finally:
        engine.dispose()
