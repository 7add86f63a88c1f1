"""Health, workers, presets, the bearer token, 503s for unreachable services, the app shell."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session

from server.api.app import create_app
from server.db.models import WorkerRecord, utcnow
from server.presets import PRESETS

CLOSED_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1
CLOSED_DB = "postgresql+psycopg://postgres@127.0.0.1:1/x"


def test_health_reaches_the_database_and_the_broker(client):
    r = client.get("/api/v1/health")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "database": {"ok": True, "error": None},
                        "broker": {"ok": True, "error": None}}


def test_startup_begins_both_checks_before_the_first_health_request(sqlite_backend):
    """The first check pays for connecting (on the embedded broker: creating its tables);
    begun at startup, the first /health shares it or finds it done, rather than fitting it
    in its budget."""
    app = create_app(sqlite_backend)
    with TestClient(app) as c:
        monitor = app.state.health
        begun = [monitor.database.latest, monitor.broker.latest]  # no request made yet
        assert None not in begun
        assert all(future.result(timeout=30).ok for future in begun)
        assert c.get("/api/v1/health").json()["status"] == "ok"


def test_a_database_that_cannot_be_reached_is_503_everywhere(sqlite_backend):
    settings = sqlite_backend.model_copy(update={"database_url": CLOSED_DB})
    with TestClient(create_app(settings)) as c:  # the app still starts
        health = c.get("/api/v1/health")
        assert health.status_code == 503
        assert health.json()["database"]["ok"] is False and health.json()["broker"]["ok"], (
            health.json())
        for method, path, body in [
            ("GET", "/api/v1/runs", None),
            ("GET", "/api/v1/runs/1/metrics", None),
            ("GET", "/api/v1/experiments", None),
            ("POST", "/api/v1/runs", {"spec": {}}),
            ("POST", "/api/v1/experiments", {"vary": {"seed": [1, 2]}}),
        ]:
            r = c.request(method, path, json=body)
            assert r.status_code == 503, (path, r.text)
            assert r.json() == {"detail": "the database cannot be reached"}


def test_a_broker_that_cannot_be_reached_loses_no_runs(backend, broker_messages):
    down = backend.model_copy(update={"broker_url": CLOSED_BROKER})
    with TestClient(create_app(down)) as c:
        assert c.get("/api/v1/health").json()["broker"]["ok"] is False
        r = c.post("/api/v1/experiments", json={"vary": {"seed": [1, 2]}})
        assert r.status_code == 503, r.text
        assert "saved" in r.json()["detail"] and "broker" in r.json()["detail"]
        saved = c.get("/api/v1/runs").json()["items"]
        assert sorted(r.json()["unsent_run_ids"]) == sorted(run["id"] for run in saved)
        assert [(run["status"], run["enqueued_at"]) for run in saved] == [("queued", None)] * 2
        assert c.post("/api/v1/runs", json={}).status_code == 503
    assert broker_messages("landscope.any") == []

    # The broker is back: the next start sends every run saved meanwhile, oldest first.
    with TestClient(create_app(backend)) as c:
        runs = c.get("/api/v1/runs").json()["items"]
        assert len(runs) == 3 and all(run["enqueued_at"] for run in runs)
    assert broker_messages("landscope.any") == [
        ("landscope.run", [run["id"]]) for run in reversed(runs)
    ]
    with TestClient(create_app(backend)):  # and sends them once only
        pass
    assert len(broker_messages("landscope.any")) == 3


def test_workers_online_are_those_seen_within_a_few_heartbeats(client, api_db):
    now = utcnow()
    common = {"hostname": "h", "pid": 1, "queues": ["landscope.cpu", "landscope.any"]}
    with Session(api_db) as s, s.begin():
        s.add_all([
            WorkerRecord(name="fresh", device="cuda:0", last_seen=now, current_run_id=7,
                         info={"gpu": "H100"}, **common),
            WorkerRecord(name="stale", device="cpu", last_seen=now - timedelta(minutes=5),
                         **common),
            WorkerRecord(name="stopped", device="cpu", last_seen=now, stopped_at=now, **common),
        ])
    online = client.get("/api/v1/workers").json()
    assert [(w["name"], w["device"], w["online"]) for w in online] == [("fresh", "cuda:0", True)]
    assert online[0]["current_run_id"] == 7 and online[0]["info"] == {"gpu": "H100"}
    every = client.get("/api/v1/workers?include_offline=true").json()
    assert [(w["name"], w["online"]) for w in every] == [
        ("fresh", True), ("stale", False), ("stopped", False)
    ]


def test_presets_list_every_preset_with_its_run_count(sqlite_client):
    got = sqlite_client.get("/api/v1/presets").json()
    assert [p["name"] for p in got] == list(PRESETS)
    for p in got:
        preset = PRESETS[p["name"]]
        assert (p["base"], p["vary"]) == (preset.base, preset.vary)
        assert p["runs"] == len(preset.specs())


# POSTs that change nothing: the experiment's dry run (its cost) answers like a read.
READ_ONLY_POSTS = {"/api/v1/experiments/cost"}


def _mutating_routes(app) -> list[tuple[str, str]]:
    """Every (method, path) that can change something, from the OpenAPI schema."""
    return [
        (method.upper(), path.replace("{run_id}", "1").replace("{analysis_id}", "1")
         .replace("{experiment_id}", "1").replace("{tag}", "baseline"))
        for path, ops in app.openapi()["paths"].items()
        for method in ops
        if method in {"post", "put", "patch", "delete"} and path not in READ_ONLY_POSTS
    ]


def test_with_a_token_every_mutating_route_needs_it(sqlite_backend):
    app = create_app(sqlite_backend.model_copy(update={"api_token": SecretStr("s3cret-ü")}))
    routes = _mutating_routes(app)
    # runs: POST, cancel, DELETE, PATCH, tag POST and DELETE; experiments: POST, DELETE,
    # PATCH, tag POST and DELETE; analyses: POST, cancel, DELETE; the SDK's POST sdk/runs,
    # ingest, finish and analyses/upload
    assert len(routes) == 18, routes
    with TestClient(app) as c:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = c.request(method, path, json={}, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/api/v1/runs").status_code == 200  # reading needs no token
        auth = {"Authorization": "Bearer s3cret-ü".encode()}
        r = c.post("/api/v1/runs", json={}, headers=auth)
        assert r.status_code == 201, r.text
        run = r.json()["id"]
        assert c.post(f"/api/v1/runs/{run}/cancel", headers=auth).status_code == 200
        assert c.delete(f"/api/v1/runs/{run}", headers=auth).status_code == 204
        assert c.post("/api/v1/experiments", json={}, headers=auth).status_code == 201


def test_without_a_token_nothing_is_asked(sqlite_client):
    assert sqlite_client.post("/api/v1/runs", json={}).status_code == 201


def test_openapi_docs_and_no_cors(sqlite_client):
    schema = sqlite_client.get("/openapi.json").json()
    assert schema["info"]["title"] == "Landscope"
    metrics = schema["paths"]["/api/v1/runs/{run_id}/metrics"]["get"]["description"]
    assert all(word in metrics for word in ('"NaN"', '"Infinity"', '"-Infinity"'))
    assert sqlite_client.get("/docs").status_code == 200
    r = sqlite_client.options(
        "/api/v1/runs",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers


def test_the_server_never_imports_torch():
    code = "import sys, server.api.app; sys.exit(3 if 'torch' in sys.modules else 0)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60).returncode == 0
