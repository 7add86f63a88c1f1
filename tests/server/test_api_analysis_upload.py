"""POST /runs/{id}/analyses/upload on SQLite and PostgreSQL: an SDK run's analysis stored
complete and shown like a worker's, replayed by Idempotency-Key, refused with the field path."""

from __future__ import annotations

import json

from sqlalchemy import select

from server.api.app import reconcile_once
from server.db.models import Analysis, AnalysisPoint
from server.db.session import make_sessionmaker

CID = "00112233445566778899aabbccddeeff"
SPEC = {"kind": "slice", "steps": [40], "x": {"lo": -1, "hi": 1, "points": 3}}


def sdk_run(client) -> int:
    r = client.post("/api/v1/sdk/runs", json={"client_id": CID, "name": "mine",
                                              "experiment": "uploads"})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def body(**steps) -> dict:
    part = {"idx": [0, 1, 2], "loss": [2.0, "NaN", "Infinity"], "acc": [0.5, None, 0.25],
            "values": {"meta": {"source": "sdk", "eps": "NaN"}, "directions": {"kind": "random"}}}
    return {"spec": SPEC, "steps": steps or {"40": part}}


def post(client, run_id: int, payload, key: str | None = None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    return client.post(f"/api/v1/runs/{run_id}/analyses/upload", content=json.dumps(payload),
                       headers=headers)


def test_stored_complete_and_shown_like_a_workers(client, backend, api_db):
    run_id = sdk_run(client)
    r = post(client, run_id, body(), key="up-1")
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["status"] == "succeeded" and out["progress"] == {"done": 3, "total": 3}
    assert out["run_id"] == run_id and out["group_id"] == out["id"]
    assert out["experiment_id"] is not None  # the run's experiment: its Landscape tab lists it
    detail = client.get(f"/api/v1/analyses/{out['id']}").json()
    step = detail["steps"]["40"]
    assert step["x"] == [-1.0, 0.0, 1.0]
    assert step["loss"] == [[2.0, "NaN", "Infinity"]]
    assert step["acc"] == [[0.5, None, 0.25]]
    assert step["values"]["meta"] == {"source": "sdk", "eps": "NaN"}
    again = post(client, run_id, body(), key="up-1")
    assert again.status_code == 201 and again.json()["id"] == out["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    with make_sessionmaker(api_db)() as s:
        assert s.scalar(select(Analysis.id).where(Analysis.run_id == run_id)) == out["id"]
        assert len(s.scalars(select(AnalysisPoint.idx)).all()) == 3
    # The reconciler leaves a finished upload alone (nothing to send, nothing to requeue).
    reconcile_once(client.app, 0.0)
    assert client.get(f"/api/v1/analyses/{out['id']}").json()["status"] == "succeeded"
    assert client.get(f"/api/v1/analyses/{out['id']}/csv").status_code == 200


def test_bad_uploads_name_their_field(client):
    run_id = sdk_run(client)

    def loc(payload) -> list:
        r = post(client, run_id, payload)
        assert r.status_code == 422, r.text
        return r.json()["detail"][0]["loc"]

    good = body()["steps"]["40"]
    assert loc({**body(), "spec": {**SPEC, "x": {"points": 0}}}) == [
        "body", "spec", "x", "points"]
    assert loc({**body(), "spec": {k: v for k, v in SPEC.items() if k != "steps"}}) == [
        "body", "spec", "steps"]
    assert loc(body(**{"41": good})) == ["body", "steps", "41"]
    assert loc(body(**{"40": {**good, "idx": [0, 1, 3]}})) == ["body", "steps", "40", "idx", 2]
    assert loc(body(**{"40": {**good, "idx": [0, 1, 1]}})) == ["body", "steps", "40", "idx", 2]
    assert loc(body(**{"40": {**good, "acc": [1.0]}})) == ["body", "steps", "40", "acc"]
    assert loc(body(**{"40": {**good, "loss": [1.0]}})) == ["body", "steps", "40", "loss"]
    assert loc({**body(), "spec": {**SPEC, "steps": [40, 50]}}) == ["body", "steps"]
    assert loc({**body(), "extra": 1})[:2] == ["body", "extra"]
    assert loc(body(**{"40": {**good, "loss": ["x", 1, 2]}}))[:5] == [
        "body", "steps", "40", "loss", 0]


def test_unknown_and_worker_runs_are_refused(client, make_run):
    assert post(client, 987654, body()).status_code == 404
    service = make_run(status="succeeded")
    r = post(client, service, body())
    assert r.status_code == 409 and "worker" in r.json()["detail"]
