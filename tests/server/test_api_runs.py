"""/runs: submit, validate against the spec and the server's limits, list, cancel, delete."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from server.db.metrics import insert_points, series_ids
from server.db.models import Point, Rollup, Run, Series, WorkerRecord, utcnow
from server.queue import worker_queues
from server.spec import RunSpec, build_spec


def test_a_run_from_a_spec_is_saved_then_sent_to_its_device_queue(client, broker_messages):
    r = client.post("/api/v1/runs", json={"name": "mine", "spec": {"steps": 50, "device": "cpu"}})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["name"] == "mine"
    assert (run["status"], run["queue"], run["step"], run["total"]) == (
        "queued", "landscope.cpu", 0, 50
    )
    assert run["progress"] == 0 and run["eta_seconds"] is None and run["last_loss"] is None
    assert run["enqueued_at"] is not None and not run["cancel_requested"]
    assert build_spec(run["spec"]) == RunSpec(steps=50, device="cpu")
    assert broker_messages("landscope.cpu") == [("landscope.run", [run["id"]])]
    assert broker_messages("landscope.any") == []
    assert client.get(f"/api/v1/runs/{run['id']}").json() == run


def test_a_run_from_a_preset_merges_overrides_into_its_sections(client):
    body = {"preset": "quick-mlp", "overrides": {"norm": "batch", "probes.landscape.every": 5}}
    r = client.post("/api/v1/runs", json=body)
    assert r.status_code == 201, r.text
    run = r.json()
    spec = build_spec(run["spec"])
    assert spec.norm == "batch" and spec.lr == 0.5 and spec.steps == 800
    assert spec.probes.landscape.every == 5
    assert spec.probes.ics.layers == [3, 5]  # the preset's other probe settings survive
    assert run["name"] == spec.name_hint() == "mlp6x128-batch-lr0.5-s0"
    assert run["probe_cost"] == spec.probe_cost()
    assert run["queue"] == "landscope.any"


@pytest.mark.parametrize(
    "body,loc,needle",
    [
        ({"spec": {"surprise": 1}}, ["body", "spec", "surprise"], "unknown key"),
        ({"spec": {"lr": -1}}, ["body", "spec", "lr"], "greater than 0"),
        ({"spec": {"probes": {"landscape": {"multipliers": [1, -2]}}}},
         ["body", "spec", "probes", "landscape", "multipliers"], "positive"),
        ({"spec": {"model": "dln"}}, ["body", "spec"], "sum_squares"),
        ({"spec": {"lr": 0.1}, "overrides": {"probes.ics.nope": 1}},
         ["body", "overrides", "probes", "ics", "nope"], "unknown key"),
        ({"preset": "quick-mlp", "overrides": {"steps": 10**7}},
         ["body", "overrides", "steps"], "LANDSCOPE_MAX_STEPS"),
        ({"spec": {"width": 5000}}, ["body", "spec", "width"], "5000 units"),
        # VGG width is a multiplier: 512 channels x 16 = 8192, over the default 4096.
        ({"spec": {"model": "vgg", "dataset": "digits", "width": 16}},
         ["body", "spec", "width"], "8192"),
        ({"spec": {"batch_size": 100_000}}, ["body", "spec", "batch_size"], "LANDSCOPE_MAX_BATCH"),
        ({"preset": "nope"}, ["body", "preset"], "quick-mlp"),
        ({"preset": "quick-mlp", "spec": {}}, ["body"], "not both"),
        ({"spec": {}, "bogus": 1}, ["body", "bogus"], "Extra inputs"),
    ],
)
def test_bad_requests_are_422_at_the_field_path_and_save_nothing(sqlite_client, body, loc, needle):
    r = sqlite_client.post("/api/v1/runs", json=body)
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["loc"] == loc
    assert needle in err["msg"]
    assert sqlite_client.get("/api/v1/runs").json()["total"] == 0


def test_a_nan_in_the_body_is_422_not_a_stored_nan(sqlite_client):
    json_type = {"content-type": "application/json"}
    r = sqlite_client.post("/api/v1/runs", content=b'{"spec": {"lr": NaN}}', headers=json_type)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "spec", "lr"]


def test_list_filters_and_paginates_newest_first(client, make_run):
    ids = [
        make_run(name="plain-lr50%", status="succeeded"),
        make_run(name="BatchNorm-a", status="running"),
        make_run(name="batchnorm-b", status="running"),
        make_run(name="plain-lr500", status="queued"),
    ]

    def names(query: str) -> list[str]:
        r = client.get(f"/api/v1/runs?{query}")
        assert r.status_code == 200, r.text
        return [run["name"] for run in r.json()["items"]]

    assert names("") == ["plain-lr500", "batchnorm-b", "BatchNorm-a", "plain-lr50%"]
    assert names("status=running") == ["batchnorm-b", "BatchNorm-a"]
    assert names("name=BATCHNORM") == ["batchnorm-b", "BatchNorm-a"]  # any case
    assert names("name=50%25") == ["plain-lr50%"]  # % is a character, not a wildcard
    page = client.get("/api/v1/runs?limit=2&offset=1").json()
    assert [r["id"] for r in page["items"]] == [ids[2], ids[1]]
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
    assert client.get("/api/v1/runs?status=running&limit=1").json()["total"] == 2
    assert client.get("/api/v1/runs?status=bogus").status_code == 422
    assert client.get("/api/v1/runs?limit=501").status_code == 422


def test_list_filters_by_experiment(client):
    exp = client.post("/api/v1/experiments", json={"vary": {"seed": [1, 2]}}).json()
    client.post("/api/v1/runs", json={"spec": {}})
    page = client.get(f"/api/v1/runs?experiment_id={exp['id']}").json()
    assert page["total"] == 2
    assert {r["id"] for r in page["items"]} == {r["id"] for r in exp["runs"]}


def test_unknown_runs_are_404(client):
    assert client.get("/api/v1/runs/999").status_code == 404
    assert client.post("/api/v1/runs/999/cancel").status_code == 404
    r = client.delete("/api/v1/runs/999")
    assert r.status_code == 404 and r.json() == {"detail": "run 999 not found"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/runs/99999999999",  # ids and steps are int4 on PostgreSQL: 422, not a 500
        "/api/v1/runs?experiment_id=99999999999",
        "/api/v1/runs/1/metrics?since_step=2147483648",
        "/api/v1/experiments/2147483648",
        "/api/v1/runs/0",
    ],
)
def test_numbers_beyond_the_columns_are_422(client, path):
    assert client.get(path).status_code == 422


def test_cancel_is_immediate_when_queued_requested_when_running_409_when_finished(
    client, make_run
):
    queued = make_run(status="queued")
    r = client.post(f"/api/v1/runs/{queued}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"] is not None

    running = make_run(status="running", started_at=utcnow(), step=3)
    r = client.post(f"/api/v1/runs/{running}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    assert client.get(f"/api/v1/runs/{running}").json()["cancel_requested"] is True

    for status in ("succeeded", "failed", "diverged"):
        done = make_run(status=status, finished_at=utcnow())
        r = client.post(f"/api/v1/runs/{done}/cancel")
        assert r.status_code == 409 and status in r.json()["detail"]
    assert client.post(f"/api/v1/runs/{queued}/cancel").status_code == 409  # already cancelled


def test_delete_refuses_active_runs_and_removes_a_finished_one_with_its_metrics(
    client, make_run, api_db
):
    for status in ("queued", "running"):
        r = client.delete(f"/api/v1/runs/{make_run(status=status)}")
        assert r.status_code == 409 and "cancel it first" in r.json()["detail"]

    keep, gone = make_run(status="succeeded"), make_run(status="succeeded")
    with api_db.begin() as conn:
        for run_id in (keep, gone):
            sid = series_ids(conn, run_id, ["train/loss"])["train/loss"]
            insert_points(conn, [(sid, s, float(s), 0) for s in range(100)])

    assert client.delete(f"/api/v1/runs/{gone}").status_code == 204
    assert client.get(f"/api/v1/runs/{gone}").status_code == 404
    assert client.get(f"/api/v1/runs/{keep}/keys").json()["keys"] == ["train/loss"]
    with api_db.connect() as conn:
        sids = conn.scalars(select(Series.id)).all()
        assert len(sids) == 1  # only the kept run's series
        for table in (Point, Rollup):
            orphans = select(func.count()).select_from(table).where(table.series_id.not_in(sids))
            assert conn.scalar(orphans) == 0
        assert conn.scalar(select(func.count()).select_from(Point)) == 100


def test_progress_eta_and_last_loss_are_derived_from_the_row(client, make_run):
    started = utcnow() - timedelta(seconds=100)
    running = make_run(status="running", started_at=started, step=25, total=100, last_loss=0.5)
    run = client.get(f"/api/v1/runs/{running}").json()
    assert run["progress"] == 0.25
    assert run["eta_seconds"] == pytest.approx(300, rel=0.05)  # 25 steps per 100 s, 75 to go
    assert run["last_loss"] == 0.5

    diverged = make_run(status="diverged", step=7, diverged_at=7, last_loss=float("nan"))
    assert client.get(f"/api/v1/runs/{diverged}").json()["last_loss"] == "NaN"
    blown = make_run(status="diverged", step=9, diverged_at=9, last_loss=float("inf"))
    run = client.get(f"/api/v1/runs/{blown}").json()
    assert run["last_loss"] == "Infinity" and run["eta_seconds"] is None


def test_the_queue_limit_counts_queued_and_running_runs(tmp_path, backend):
    from fastapi.testclient import TestClient

    from server.api.app import create_app

    settings = backend.model_copy(update={"max_queued_runs": 3})
    with TestClient(create_app(settings)) as c:
        assert c.post("/api/v1/experiments", json={"vary": {"seed": [1, 2]}}).status_code == 201
        r = c.post("/api/v1/experiments", json={"vary": {"seed": [3, 4]}})
        assert r.status_code == 429 and "at most 3" in r.json()["detail"]
        assert c.get("/api/v1/runs").json()["total"] == 2  # nothing of the refused request
        assert c.post("/api/v1/runs", json={}).status_code == 201  # 3 fit
        first = c.get("/api/v1/runs").json()["items"][-1]["id"]
        assert c.post(f"/api/v1/runs/{first}/cancel").status_code == 200
        assert c.post("/api/v1/runs", json={}).status_code == 201  # a cancelled run frees room
        assert c.post("/api/v1/runs", json={}).status_code == 429


def test_run_rows_match_the_database(client, api_db):
    run = client.post("/api/v1/runs", json={"spec": {"seed": 7}}).json()
    with api_db.connect() as conn:
        row = conn.execute(
            select(Run.spec, Run.status, Run.enqueued_at).where(Run.id == run["id"])
        ).one()
    assert row.spec == run["spec"] and row.status == "queued" and row.enqueued_at is not None


def test_runs_are_committed_before_they_are_sent(client, api_db):
    """At the moment each message is published, another connection already sees the run:
    a worker can never receive an id whose row is not there yet."""
    from celery.signals import before_task_publish

    seen = []

    def look(body=None, **_):
        run_id = body[0][0]  # protocol 2 body: (args, kwargs, embed)
        with api_db.connect() as conn:
            seen.append(conn.scalar(select(Run.status).where(Run.id == run_id)))

    before_task_publish.connect(look, weak=False)
    try:
        r = client.post("/api/v1/experiments", json={"vary": {"seed": [1, 2]}})
        assert r.status_code == 201
        assert client.post("/api/v1/runs", json={}).status_code == 201
    finally:
        before_task_publish.disconnect(look)
    assert seen == ["queued"] * 3


def _worker(name: str, device: str, **fields) -> WorkerRecord:
    return WorkerRecord(**{"name": name, "hostname": "h", "pid": 1, "device": device,
                           "queues": worker_queues(device), "last_seen": utcnow(), **fields})


def test_a_queued_run_no_online_worker_serves_says_what_it_waits_for(client, api_db):
    def post(device: str) -> dict:
        r = client.post("/api/v1/runs", json={"spec": {"steps": 50, "device": device}})
        assert r.status_code == 201, r.text
        return r.json()

    def waiting() -> dict[int, str | None]:
        return {r["id"]: r["waiting_for"] for r in client.get("/api/v1/runs").json()["items"]}

    cuda, auto, cancelled = post("cuda"), post("auto"), post("cuda")
    assert (cuda["waiting_for"], auto["waiting_for"]) == ("a cuda worker", "a worker")
    assert client.post(f"/api/v1/runs/{cancelled['id']}/cancel").json()["waiting_for"] is None
    exp = client.post("/api/v1/experiments", json={"base": {"steps": 50, "device": "cuda"},
                                                   "vary": {"lr": [0.1, 0.2]}}).json()
    assert [r["waiting_for"] for r in exp["runs"]] == ["a cuda worker"] * 2

    with Session(api_db) as s, s.begin():  # only a cpu worker is online: cuda runs still wait
        s.add_all([_worker("cpu", "cpu"),
                   _worker("gone", "cuda:0", last_seen=utcnow() - timedelta(minutes=5)),
                   _worker("stopped", "cuda:1", stopped_at=utcnow())])
    assert client.get(f"/api/v1/runs/{cuda['id']}").json()["waiting_for"] == "a cuda worker"
    assert waiting() == {cuda["id"]: "a cuda worker", auto["id"]: None, cancelled["id"]: None,
                         **{r["id"]: "a cuda worker" for r in exp["runs"]}}
    got = client.get(f"/api/v1/experiments/{exp['id']}").json()
    assert [r["waiting_for"] for r in got["runs"]] == ["a cuda worker"] * 2

    with Session(api_db) as s, s.begin():
        s.add(_worker("gpu", "cuda:0"))
    assert set(waiting().values()) == {None}
    assert client.get(f"/api/v1/runs/{cuda['id']}").json()["waiting_for"] is None


def test_listing_runs_asks_for_the_workers_once_per_page(client, make_run):
    engine = client.app.state.engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    def listed(n_runs: int) -> int:
        while len(client.get("/api/v1/runs").json()["items"]) < n_runs:
            make_run(status="queued")
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            assert len(client.get("/api/v1/runs").json()["items"]) == n_runs
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    assert listed(2) == listed(12)
    assert sum("workers" in s for s in statements) == 1
