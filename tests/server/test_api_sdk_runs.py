"""SDK runs through the API, on SQLite + the embedded broker and PostgreSQL + Redis: create
(idempotent by client_id), ingest (NaN/inf kept, a resent batch changes nothing), finish,
crashed by the reconciler and revived by a heartbeat, cancel, delete."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update

from server.api.app import create_app, reconcile_once
from server.db.models import DistributionRecord, Point, ProbeRecord, Rollup, Run, utcnow
from server.db.session import make_sessionmaker
from server.spec import RunSpec

from .conftest import make_settings

CID = "0123456789abcdef0123456789abcdef"


@contextmanager
def app_client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def new_run(client, cid: str = CID, **fields) -> dict:
    # json.dumps writes NaN as Python's bare word, which the server's parser accepts too.
    body = json.dumps({"client_id": cid, "name": "mine", **fields})
    r = client.post("/api/v1/sdk/runs", content=body,
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    return r.json()


def batch(steps=(0, 1, 2, 3), heartbeat=None) -> dict:
    out = {
        "scalars": [
            {"key": "train/loss", "steps": list(steps),
             "values": [2.5, "NaN", "Infinity", "-Infinity"][: len(steps)]},
            {"key": "train/acc", "steps": list(steps), "values": [0.1 * s for s in steps]},
        ],
        "etas": [{"step": 0, "probe": "landscape", "records": [
            {"multiplier": m, "eta": 0.1 * m, "loss": "NaN" if m == 2 else 1.0 / m,
             "grad_dist": 0.5} for m in (0.5, 1.0, 2.0)]}],
        "distributions": [{"step": 0, "layer": 1, "scope": "layer", "unit": None,
                           "lo": -4, "hi": 4, "counts": [1, 5, 2], "underflow": 1,
                           "overflow": 0, "nonfinite": 2, "mean": 0.25, "var": "Infinity",
                           "quantiles": {"q50": 0.0, "q99": "NaN"}}],
    }
    if heartbeat is not None:
        out["heartbeat"] = heartbeat
    return out


def counts(engine, run_id: int) -> dict[str, int]:
    with engine.connect() as c:
        series = text("SELECT id FROM metric_series WHERE run_id = :r")
        sids = [r[0] for r in c.execute(series, {"r": run_id})]
        return {
            "points": c.scalar(select(func.count()).select_from(Point)
                               .where(Point.series_id.in_(sids or [-1]))),
            "rollup_n": c.scalar(select(func.coalesce(func.sum(Rollup.n), 0))
                                 .where(Rollup.series_id.in_(sids or [-1]), Rollup.level == 1)),
            "etas": c.scalar(select(func.count()).select_from(ProbeRecord)
                             .where(ProbeRecord.run_id == run_id)),
            "dists": c.scalar(select(func.count()).select_from(DistributionRecord)
                              .where(DistributionRecord.run_id == run_id)),
        }


def test_create_is_idempotent_by_client_id_and_joins_experiments_by_name(client):
    run = new_run(client, experiment="sweep", config={"lr": 0.1, "wd": math.nan}, total=100)
    assert (run["source"], run["status"], run["queue"], run["spec"]) == ("sdk", "running",
                                                                         "sdk", {})
    assert run["config"] == {"lr": 0.1, "wd": "NaN"}  # non-finite config values as strings
    assert (run["total"], run["probe_cost"], run["heartbeat_at"] is not None) == (100, None, True)
    again = client.post("/api/v1/sdk/runs", json={"client_id": CID, "name": "other"})
    assert again.status_code == 200 and again.json()["id"] == run["id"]
    assert again.json()["name"] == "mine"  # the first request's run, unchanged
    second = new_run(client, "f" * 32, experiment="sweep")
    assert second["experiment_id"] == run["experiment_id"]  # the same sdk experiment
    exp = client.get(f"/api/v1/experiments/{run['experiment_id']}").json()
    assert (exp["source"], exp["name"], len(exp["runs"])) == ("sdk", "sweep", 2)
    assert exp["status_counts"] == {"running": 2}
    listed = client.get("/api/v1/runs").json()["items"]
    assert {r["source"] for r in listed} == {"sdk"}
    by_id = new_run(client, "e" * 32, experiment_id=run["experiment_id"])
    assert by_id["experiment_id"] == run["experiment_id"]
    no_total = new_run(client, "d" * 32)
    assert (no_total["total"], no_total["experiment_id"], no_total["progress"]) == (0, None, 0.0)


def test_x_axis_comes_from_the_sizes_the_loop_gave(client):
    run = new_run(client, batch_size=64, train_size=50_000)
    assert run["x_axis"] == {"batch_size": 64, "train_size": 50_000}
    assert client.get(f"/api/v1/runs/{run['id']}").json()["x_axis"] == run["x_axis"]
    full = new_run(client, "f" * 32, train_size=1000)  # no batch size: full batch
    assert full["x_axis"] == {"batch_size": None, "train_size": 1000}
    assert new_run(client, "e" * 32)["x_axis"] is None  # nothing said: nothing known
    listed = {r["id"]: r["x_axis"] for r in client.get("/api/v1/runs").json()["items"]}
    assert listed[run["id"]] == run["x_axis"]


def test_bad_create_requests_name_their_field(client):
    def loc(body):
        r = client.post("/api/v1/sdk/runs", json=body)
        assert r.status_code == 422, r.text
        return r.json()["detail"][0]["loc"]

    assert loc({"client_id": "not-hex", "name": "x"}) == ["body", "client_id"]
    assert loc({"client_id": CID, "name": ""}) == ["body", "name"]
    assert loc({"client_id": CID, "name": "x", "total": -1}) == ["body", "total"]
    assert loc({"client_id": CID, "name": "x", "batch_size": 0}) == ["body", "batch_size"]
    assert loc({"client_id": CID, "name": "x", "train_size": "many"}) == ["body", "train_size"]
    assert loc({"client_id": CID, "name": "x", "config": {"a": "\u0000"}}) == [
        "body", "config", "a"]
    assert loc({"client_id": CID, "name": "x", "config": {"big": "x" * 70_000}}) == [
        "body", "config"]
    assert loc({"client_id": CID, "name": "x", "experiment_id": 999}) == [
        "body", "experiment_id"]
    r = client.post("/api/v1/experiments", json={"preset": "quick-mlp", "analyses": []})
    assert r.status_code == 201, r.text
    assert loc({"client_id": CID, "name": "x", "experiment_id": r.json()["id"]}) == [
        "body", "experiment_id"]  # a service experiment
    assert client.get("/api/v1/runs", params={"status": "running"}).json()["total"] == 0


def test_ingest_stores_nan_and_inf_and_a_resent_batch_changes_nothing(client, api_db):
    run_id = new_run(client, total=4)["id"]
    body = gzip.compress(json.dumps(batch(heartbeat={"step": 3, "last_loss": "NaN"})).encode())
    r = client.post(f"/api/v1/runs/{run_id}/ingest", content=body,
                    headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == {"points": 8, "etas": 3, "distributions": 1, "status": "running",
                        "cancel_requested": False}
    before = counts(api_db, run_id)
    assert before == {"points": 8, "rollup_n": 8, "etas": 3, "dists": 1}
    for _ in range(2):  # the same batch again (a retry), uncompressed this time
        assert client.post(f"/api/v1/runs/{run_id}/ingest", json=batch()).status_code == 200
    assert counts(api_db, run_id) == before
    series = client.get(f"/api/v1/runs/{run_id}/metrics").json()["series"]
    assert series["train/loss"]["values"] == [2.5, "NaN", "Infinity", "-Infinity"]
    assert series["train/acc"]["steps"] == [0, 1, 2, 3]
    probes = client.get(f"/api/v1/runs/{run_id}/probes").json()["records"]
    assert [p["loss"] for p in probes] == [2.0, 1.0, "NaN"]
    dist = client.get(f"/api/v1/runs/{run_id}/distributions").json()["records"][0]
    assert dist["stats"] == {"mean": 0.25, "var": "Infinity",
                             "quantiles": {"q50": 0.0, "q99": "NaN"}}
    run = client.get(f"/api/v1/runs/{run_id}").json()
    # The heartbeat names the last step trained (3): 4 steps done of the 4 planned.
    assert (run["step"], run["last_loss"], run["progress"]) == (4, "NaN", 1.0)
    # An older batch resent from the spool does not move the step back.
    old = {"heartbeat": {"step": 1, "last_loss": 9.0}}
    assert client.post(f"/api/v1/runs/{run_id}/ingest", json=old).status_code == 200
    assert client.get(f"/api/v1/runs/{run_id}").json()["step"] == 4


def test_bad_batches_get_422_at_their_field_path(client, api_db):
    run_id = new_run(client)["id"]

    def loc(body):
        r = client.post(f"/api/v1/runs/{run_id}/ingest", json=body)
        assert r.status_code == 422, r.text
        return r.json()["detail"][0]["loc"]

    col = {"key": "k", "steps": [0, 1], "values": [1.0, 2.0]}
    assert loc({"scalars": [col, {**col, "values": [1.0, "nan"]}]}) == [
        "body", "scalars", 1, "values", 1]
    assert loc({"scalars": [{**col, "values": [1.0]}]}) == ["body", "scalars", 0, "values"]
    assert loc({"scalars": [{**col, "steps": [0, -1]}]}) == ["body", "scalars", 0, "steps", 1]
    assert loc({"scalars": [{**col, "steps": [0, 1.5]}]}) == ["body", "scalars", 0, "steps", 1]
    assert loc({"scalars": [{**col, "steps": [True, 1]}]}) == ["body", "scalars", 0, "steps", 0]
    assert loc({"scalars": [{**col, "steps": [0, 2**31]}]}) == [
        "body", "scalars", 0, "steps", 1]
    assert loc({"scalars": [{**col, "key": ""}]}) == ["body", "scalars", 0, "key"]
    assert loc({"scalars": [{**col, "key": "x" * 201}]}) == ["body", "scalars", 0, "key"]
    assert loc({"scalars": [{"key": "k", "steps": [0]}]}) == ["body", "scalars", 0, "values"]
    assert loc({"scalars": {"k": [1.0]}}) == ["body", "scalars"]
    assert loc({"scalar": []}) == ["body", "scalar"]
    assert loc([1, 2]) == ["body"]
    eta = batch()["etas"][0]
    bad_eta = {**eta, "records": [{**eta["records"][0], "multiplier": "NaN"}]}
    assert loc({"etas": [bad_eta]}) == ["body", "etas", 0, "records", 0, "multiplier"]
    dist = batch()["distributions"][0]
    assert loc({"distributions": [{**dist, "scope": "all"}]}) == [
        "body", "distributions", 0, "scope"]
    assert loc({"distributions": [{**dist, "counts": [1, -2]}]}) == [
        "body", "distributions", 0, "counts", 1]
    assert loc({"heartbeat": {"step": "3"}}) == ["body", "heartbeat", "step"]
    # Nothing of a refused batch is stored: the good column before the bad one neither.
    assert counts(api_db, run_id)["points"] == 0


def test_unreadable_bodies_get_400_413_415(backend):
    with app_client(backend.model_copy(update={"max_ingest_mb": 0.01})) as client:
        run_id = new_run(client)["id"]
        url = f"/api/v1/runs/{run_id}/ingest"

        def post(content: bytes, encoding: str | None = "gzip") -> int:
            headers = {"Content-Encoding": encoding} if encoding else {}
            return client.post(url, content=content, headers=headers).status_code

        assert post(b"{not json", None) == 400
        assert post(b"\xff\xfe", None) == 400
        assert post(b"not gzip at all") == 400
        good = gzip.compress(json.dumps(batch()).encode())
        assert post(good[:-10]) == 400  # truncated
        assert post(good, "br") == 415
        bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")  # 5 MB from a few KiB
        assert len(bomb) < 10_000
        assert post(bomb) == 413
        assert post(b" " * 20_000, None) == 413  # over the route's own limit, as sent
        assert post(good) == 200


def test_the_ingest_route_takes_bodies_past_the_general_limit(client):
    run_id = new_run(client)["id"]
    n = 100_000  # about 1.3 MB of JSON: over LANDSCOPE_MAX_BODY_BYTES (1 MiB), not ingest's
    body = {"scalars": [{"key": "big", "steps": list(range(n)), "values": [0.123456] * n}]}
    raw = json.dumps(body).encode()
    assert len(raw) > 1_048_576
    r = client.post(f"/api/v1/runs/{run_id}/ingest", content=raw)
    assert r.status_code == 200, r.text
    assert r.json()["points"] == n
    r = client.post("/api/v1/runs", content=raw)  # other routes keep the general limit
    assert r.status_code == 413


def test_service_runs_and_unknown_runs_are_refused(client, make_run):
    service = make_run(status="running")
    assert client.post(f"/api/v1/runs/{service}/ingest", json=batch()).status_code == 409
    assert client.post(f"/api/v1/runs/{service}/finish",
                       json={"status": "succeeded"}).status_code == 409
    assert client.post("/api/v1/runs/99999/ingest", json=batch()).status_code == 404
    assert client.post("/api/v1/runs/99999/finish",
                       json={"status": "failed"}).status_code == 404


def test_finish_is_idempotent_and_a_finished_run_still_takes_batches(client, api_db):
    run_id = new_run(client)["id"]
    r = client.post(f"/api/v1/runs/{run_id}/finish",
                    json={"status": "failed", "error": "boom", "step": 7})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["status"], out["error"], out["step"]) == ("failed", "boom", 8)  # steps done
    assert out["finished_at"] is not None
    again = client.post(f"/api/v1/runs/{run_id}/finish", json={"status": "failed"})
    assert again.status_code == 200 and again.json()["finished_at"] == out["finished_at"]
    assert client.post(f"/api/v1/runs/{run_id}/finish",
                       json={"status": "succeeded"}).status_code == 409
    # The spool drained after the end: stored, and the status stays the loop's last word.
    r = client.post(f"/api/v1/runs/{run_id}/ingest", json=batch(heartbeat={"step": 9}))
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert counts(api_db, run_id)["points"] == 8
    assert client.get(f"/api/v1/runs/{run_id}").json()["step"] == 8


def test_a_silent_run_crashes_and_a_heartbeat_revives_it(client, api_db, make_run,
                                                         broker_messages):
    sdk_id = new_run(client)["id"]
    spec = RunSpec(model="mlp", dataset="digits", steps=5).model_dump(mode="json")
    service_id = make_run(status="running", spec=spec, queue="landscope.any")
    past = utcnow() - timedelta(seconds=3600)
    with make_sessionmaker(api_db).begin() as s:
        s.execute(update(Run).where(Run.id.in_([sdk_id, service_id]))
                  .values(heartbeat_at=past, created_at=past))
    reconcile_once(client.app)
    run = client.get(f"/api/v1/runs/{sdk_id}").json()
    assert run["status"] == "crashed"
    assert "no heartbeat" in run["error"] and run["finished_at"] is not None
    assert client.get(f"/api/v1/runs/{service_id}").json()["status"] == "queued"  # requeued
    sent = [args[0] for _, args in broker_messages("landscope.any")]
    assert sent == [service_id]  # the sdk run is never sent to a worker
    assert client.get("/api/v1/runs", params={"status": "crashed"}).json()["total"] == 1
    # A batch without a heartbeat is stored but revives nothing; a heartbeat does.
    assert client.post(f"/api/v1/runs/{sdk_id}/ingest", json=batch()).json()["status"] == (
        "crashed")
    r = client.post(f"/api/v1/runs/{sdk_id}/ingest", json={"heartbeat": {"step": 4}})
    assert r.json()["status"] == "running"
    run = client.get(f"/api/v1/runs/{sdk_id}").json()
    assert (run["status"], run["error"], run["finished_at"], run["step"]) == (
        "running", None, None, 5)
    reconcile_once(client.app)  # fresh heartbeat: left alone
    assert client.get(f"/api/v1/runs/{sdk_id}").json()["status"] == "running"
    # A crashed run may still finish (its process was only cut off from the server).
    with make_sessionmaker(api_db).begin() as s:
        s.execute(update(Run).where(Run.id == sdk_id).values(heartbeat_at=past))
    reconcile_once(client.app)
    r = client.post(f"/api/v1/runs/{sdk_id}/finish", json={"status": "succeeded"})
    assert r.json()["status"] == "succeeded"


def test_cancel_asks_the_loop_and_delete_needs_a_finished_run(client, api_db):
    run_id = new_run(client)["id"]
    client.post(f"/api/v1/runs/{run_id}/ingest", json=batch())
    assert client.delete(f"/api/v1/runs/{run_id}").status_code == 409  # running
    assert client.post(f"/api/v1/runs/{run_id}/cancel").status_code == 202
    assert client.post(f"/api/v1/runs/{run_id}/ingest", json={}).json()["cancel_requested"]
    r = client.post(f"/api/v1/runs/{run_id}/finish", json={"status": "cancelled"})
    assert r.json()["status"] == "cancelled"
    assert client.delete(f"/api/v1/runs/{run_id}").status_code == 204
    assert counts(api_db, run_id) == {"points": 0, "rollup_n": 0, "etas": 0, "dists": 0}
    assert client.post(f"/api/v1/runs/{run_id}/ingest", json=batch()).status_code == 404
    # The client_id is free again: a sync of the same offline run makes a new run.
    fresh = new_run(client)  # (201: new_run checks it)
    assert (fresh["status"], fresh["step"]) == ("running", 0)
    assert counts(api_db, fresh["id"])["points"] == 0


def test_sdk_runs_take_no_room_in_the_queue_and_cannot_be_analysed(backend):
    with app_client(backend.model_copy(update={"max_queued_runs": 1})) as client:
        run_id = new_run(client)["id"]
        new_run(client, "a" * 32)
        r = client.post("/api/v1/runs", json={"preset": "quick-mlp"})
        assert r.status_code == 201, r.text  # two sdk runs running, one service run queued
        r = client.post("/api/v1/analyses", json={"run_id": run_id,
                                                  "spec": {"kind": "surface"}})
        assert r.status_code in (409, 422), r.text
        assert "SDK run" in json.dumps(r.json())


def test_the_token_protects_the_sdk_routes(tmp_path, migrated_db_url):
    settings = make_settings(tmp_path, migrated_db_url,
                             f"sqla+sqlite:///{tmp_path / 'broker.db'}", api_token="t0k")
    with app_client(settings) as client:
        body = {"client_id": CID, "name": "x"}
        assert client.post("/api/v1/sdk/runs", json=body).status_code == 401
        auth = {"Authorization": "Bearer t0k"}
        run_id = client.post("/api/v1/sdk/runs", json=body, headers=auth).json()["id"]
        assert client.post(f"/api/v1/runs/{run_id}/ingest", json={}).status_code == 401
        assert client.post(f"/api/v1/runs/{run_id}/finish",
                           json={"status": "failed"}).status_code == 401
        assert client.post(f"/api/v1/runs/{run_id}/ingest", json={},
                           headers=auth).status_code == 200


def test_huge_finite_values_are_stored_whatever_path_the_write_takes(client, api_db):
    """Values near the float limit are data like any other: their rollup sums overflow to
    infinity, never to an error, on the fast first write and on a rewrite alike."""
    run_id = new_run(client)["id"]
    big = {"scalars": [{"key": "x", "steps": [0, 1, 2], "values": [1e308, 1.5e308, -1e308]}]}
    for _ in range(2):  # the second time, every row exists: the insert-ignore path
        r = client.post(f"/api/v1/runs/{run_id}/ingest", json=big)
        assert r.status_code == 200, r.text
    later = {"scalars": [{"key": "x", "steps": [1, 3], "values": [1e308, 1.7e308]}]}
    assert client.post(f"/api/v1/runs/{run_id}/ingest", json=later).status_code == 200
    got = client.get(f"/api/v1/runs/{run_id}/metrics", params={"keys": "x"}).json()
    assert got["series"]["x"]["values"] == [1e308, 1.5e308, -1e308, 1.7e308]
    for max_points in (1, 2):  # downsampled: the means of buckets whose sums overflow, or not
        r = client.get(f"/api/v1/runs/{run_id}/metrics",
                       params={"keys": "x", "max_points": max_points})
        assert r.status_code == 200, r.text
    first, second = r.json()["series"]["x"]["values"]
    assert first == "Infinity"  # 1e308 + 1.5e308 overflows, as IEEE (and SQLite) say
    assert second == pytest.approx((-1e308 + 1.7e308) / 2)
