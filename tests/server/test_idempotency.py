"""Idempotency-Key on POST /runs and POST /experiments: a retry gets the first answer and
creates nothing, on both backends, also under concurrency, after expiry, and after the API
died between its commit and its answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.api.app import create_app
from server.db.migrate import upgrade
from server.db.models import IdempotencyKey, Run, utcnow
from server.db.session import make_engine, make_sessionmaker
from tests.support.concurrency import concurrently
from tests.support.dying_api import DIED
from tests.support.processes import stop_group

ROOT = Path(__file__).resolve().parents[2]
RUN = {"spec": {"steps": 5, "device": "cpu"}}
EXPERIMENT = {"base": {"steps": 5, "device": "cpu"}, "vary": {"seed": [1, 2]}}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def count(engine, model) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("path,body", [("/api/v1/runs", RUN),
                                       ("/api/v1/experiments", EXPERIMENT)])
def test_the_same_key_twice_answers_the_first_resource_and_creates_nothing(
    client, api_db, broker_messages, path, body
):
    first = client.post(path, json=body, headers=keyed("k-1"))
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = client.post(path, json=body, headers=keyed("k-1"))
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()  # the same resource, the same ids
    runs = 1 if path.endswith("runs") else 2
    assert count(api_db, Run) == runs
    assert len(broker_messages("landscope.cpu")) == runs  # sent once
    # Without a key, or with another, the same body is a new request.
    assert client.post(path, json=body).status_code == 201
    assert client.post(path, json=body, headers=keyed("k-2")).status_code == 201
    assert count(api_db, Run) == 3 * runs


def test_the_same_key_with_another_body_or_endpoint_is_422(client, api_db):
    run = client.post("/api/v1/runs", json=RUN, headers=keyed("k")).json()
    other = {"spec": {"steps": 6, "device": "cpu"}}
    for path, body in [("/api/v1/runs", other), ("/api/v1/experiments", EXPERIMENT)]:
        r = client.post(path, json=body, headers=keyed("k"))
        assert r.status_code == 422, r.text
        [err] = r.json()["detail"]
        assert err["loc"] == ["header", "Idempotency-Key"]
        assert "use a new key" in err["msg"]
    assert count(api_db, Run) == 1
    # Key order and defaults spelled out do not make another body.
    same = {"overrides": {}, "spec": {"device": "cpu", "steps": 5}}
    r = client.post("/api/v1/runs", json=same, headers=keyed("k"))
    assert r.status_code == 201 and r.json()["id"] == run["id"]


@pytest.mark.parametrize("value", [b"", b"x" * 256, b"with space", "\u00e9".encode("latin-1"),
                                   b"tab\there"])
def test_a_malformed_key_is_422_at_the_header(sqlite_client, value):
    r = sqlite_client.post("/api/v1/runs", json=RUN, headers={"Idempotency-Key": value})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert sqlite_client.get("/api/v1/runs").json()["total"] == 0


def test_a_key_of_255_visible_characters_is_accepted(sqlite_client):
    key = "".join(chr(c) for c in range(0x21, 0x7F)) * 3
    r = sqlite_client.post("/api/v1/runs", json=RUN, headers=keyed(key[:255]))
    assert r.status_code == 201, r.text


def test_concurrent_requests_with_one_key_create_one_resource(backend, api_db):
    app = create_app(backend)
    with TestClient(app):
        answers = concurrently(app, 8, lambda c, _: c.post(
            "/api/v1/experiments", json=EXPERIMENT, headers=keyed("same")))
    assert [r.status_code for r in answers] == [201] * 8, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum("Idempotent-Replayed" not in r.headers for r in answers) == 1
    assert count(api_db, Run) == 2


def test_a_key_older_than_24_hours_counts_as_unused_and_is_purged(client, api_db):
    sessions = make_sessionmaker(api_db)
    with sessions.begin() as s:
        s.add_all([
            IdempotencyKey(key="old", endpoint="runs", request_hash="0" * 64, resource_id=999,
                           created_at=utcnow() - timedelta(hours=24, minutes=1)),
            IdempotencyKey(key="stale", endpoint="runs", request_hash="0" * 64,
                           resource_id=998, created_at=utcnow() - timedelta(hours=25)),
        ])
    r = client.post("/api/v1/runs", json=RUN, headers=keyed("old"))
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    with sessions() as s:
        rows = {k.key: k.resource_id for k in s.scalars(select(IdempotencyKey))}
    assert rows == {"old": r.json()["id"]}  # replaced; the other expired key purged
    # Within 24 h the key holds, whatever its age.
    with sessions.begin() as s:
        s.get(IdempotencyKey, "old").created_at = utcnow() - timedelta(hours=23, minutes=59)
    again = client.post("/api/v1/runs", json=RUN, headers=keyed("old"))
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == r.json()["id"]


def test_a_refused_request_leaves_its_key_unused(tmp_path, sqlite_backend):
    settings = sqlite_backend.model_copy(update={"max_queued_runs": 1})
    with TestClient(create_app(settings)) as c:
        first = c.post("/api/v1/runs", json=RUN).json()
        assert c.post("/api/v1/runs", json=RUN, headers=keyed("k")).status_code == 429
        assert c.post(f"/api/v1/runs/{first['id']}/cancel").status_code == 200
        r = c.post("/api/v1/runs", json=RUN, headers=keyed("k"))
        assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers


def test_a_replay_of_a_deleted_run_is_409(sqlite_client):
    run = sqlite_client.post("/api/v1/runs", json=RUN, headers=keyed("k")).json()
    assert sqlite_client.post(f"/api/v1/runs/{run['id']}/cancel").status_code == 200
    assert sqlite_client.delete(f"/api/v1/runs/{run['id']}").status_code == 204
    r = sqlite_client.post("/api/v1/runs", json=RUN, headers=keyed("k"))
    assert r.status_code == 409 and "has since been deleted" in r.json()["detail"]


def test_a_page_on_an_allowed_origin_may_send_a_key_and_see_the_replay(sqlite_backend):
    settings = sqlite_backend.model_copy(update={"cors_origins": "https://lab.example"})
    origin = {"Origin": "https://lab.example"}
    with TestClient(create_app(settings)) as c:
        pre = c.options("/api/v1/runs", headers={
            **origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,idempotency-key"})
        assert pre.status_code == 200, pre.text
        c.post("/api/v1/runs", json=RUN, headers={**origin, **keyed("k")})
        r = c.post("/api/v1/runs", json=RUN, headers={**origin, **keyed("k")})
        assert r.headers["Idempotent-Replayed"] == "true"
        assert "idempotent-replayed" in r.headers["access-control-expose-headers"].lower()


# -- an API killed between its commit and its answer ------------------------------------------


def start_api(module: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """A real API process; (process, API base URL) once it answers /health."""
    proc = subprocess.Popen([sys.executable, "-m", *module], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"API\s+(http://\S+/api/v1)\s", log.read_text())
        if found:
            try:
                if httpx.get(found.group(1) + "/health", timeout=5).status_code == 200:
                    return proc, found.group(1)
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    stop_group(proc)
    raise AssertionError(f"the API did not start:\n{log.read_text()[-3000:]}")


def test_a_retry_after_the_api_died_between_commit_and_answer_gets_the_saved_run(
    pg_url, redis_space, tmp_path
):
    upgrade(pg_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCOPE_")}
    env.update(LANDSCOPE_DATABASE_URL=pg_url, LANDSCOPE_BROKER_URL=redis_space.url,
               LANDSCOPE_BROKER_KEY_PREFIX=redis_space.prefix,
               LANDSCOPE_DATA_DIR=str(tmp_path), DIE_AFTER_COMMIT_KEY="doomed")
    dying, base = start_api(["tests.support.dying_api"], env, tmp_path / "dying.log")
    try:
        assert httpx.post(f"{base}/runs", json=RUN, timeout=30).status_code == 201  # no key
        with pytest.raises(httpx.TransportError):  # the connection drops: no answer at all
            httpx.post(f"{base}/runs", json=RUN, headers=keyed("doomed"), timeout=30)
        assert dying.wait(30) == DIED
    finally:
        stop_group(dying)
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        saved = conn.execute(select(Run.id, Run.enqueued_at).order_by(Run.id)).all()
    # The doomed request's run was committed, and it died before sending it.
    assert len(saved) == 2 and saved[1].enqueued_at is None

    api, base = start_api(["landscope.cli", "api", "--port", "0", "--no-dashboard"], env,
                          tmp_path / "api.log")
    try:
        r = httpx.post(f"{base}/runs", json=RUN, headers=keyed("doomed"), timeout=30)
    finally:
        stop_group(api)
    assert r.status_code == 201, r.text
    assert r.headers["Idempotent-Replayed"] == "true"
    assert r.json()["id"] == saved[1].id
    assert r.json()["enqueued_at"] is not None  # sent by the new API's first reconcile pass
    with engine.connect() as conn:
        assert conn.scalars(select(Run.id).order_by(Run.id)).all() == [s.id for s in saved]
    engine.dispose()
