"""POST /analyses: create for a run or an experiment (one group, one analysis per run, sent
to the run's queue), dry run, bad requests naming the field, targets and steps checked against
the runs' snapshots (409s naming what is missing), the server's limits as 422s at the field that
drives them, an Idempotency-Key creating one group, and analyses saved while the broker is down
sent once it is back.

Runs, snapshots, points and values are inserted directly, as a worker would have left them:
these tests are about the API's side, on SQLite + the embedded broker and PostgreSQL + Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from server.analysis_spec import AnalysisSpec
from server.db.models import Analysis, Experiment, Run, Snapshot
from server.db.session import make_sessionmaker
from server.queue import ANALYSIS_PREPARE_TASK
from server.settings import Settings
from tests.server.analysis_runs import (
    API,
    arrange_fixture,  # noqa: F401 - the arrange fixture
    count,
    run_spec,
)


def experiment(api_db: Engine) -> int:
    with make_sessionmaker(api_db).begin() as s:
        e = Experiment(name="e", base_spec={}, vary={})
        s.add(e)
        s.flush()
        return e.id


def test_a_surface_of_a_run_is_saved_then_sent_to_the_run_s_queue(client, arrange,
                                                                   broker_messages):
    run_id = arrange()
    r = client.post(API, json={"run_id": run_id, "spec": {"kind": "surface"}})
    assert r.status_code == 201, r.text
    (a,) = r.json()["analyses"]
    assert (a["run_id"], a["kind"], a["bn_mode"], a["status"]) == (run_id, "surface", "batch",
                                                                  "queued")
    assert a["group_id"] == a["id"] and a["experiment_id"] is None
    assert a["progress"] == {"done": 0, "total": 441}
    assert a["spec"]["steps"] == [40]  # None: the run's last step
    assert AnalysisSpec.model_validate(a["spec"]).grid_shape() == (21, 21)
    assert a["cost"]["points"] == 441 and a["cost"]["forward_passes"] == 441
    assert a["enqueued_at"] is not None
    assert broker_messages("landscope.cpu") == [(ANALYSIS_PREPARE_TASK, [a["id"]])]

    detail = client.get(f"{API}/{a['id']}").json()
    assert {k: detail[k] for k in a} == a
    step = detail["steps"]["40"]
    assert step["x"] == pytest.approx([-1 + i / 10 for i in range(21)])
    assert step["y"] == step["x"]
    assert len(step["loss"]) == 21 and all(row == [None] * 21 for row in step["loss"])
    assert step["acc"] is None and step["test_loss"] is None and step["values"] == {}


def test_an_experiment_gets_one_analysis_per_run_sharing_spec_and_group(client, api_db, arrange,
                                                                       broker_messages):
    exp = experiment(api_db)
    runs = [arrange(experiment_id=exp), arrange(experiment_id=exp,
                                                spec=run_spec(norm="batch"))]
    other = arrange()
    spec = {"kind": "slice", "steps": [10, 40], "directions": {"seed": 7}}
    r = client.post(API, json={"experiment_id": exp, "spec": spec})
    assert r.status_code == 201, r.text
    made = r.json()["analyses"]
    assert [a["run_id"] for a in made] == runs
    assert len({a["group_id"] for a in made}) == 1 and made[0]["group_id"] == made[0]["id"]
    assert all(a["experiment_id"] == exp for a in made)
    assert {a["spec"]["directions"]["seed"] for a in made} == {7}
    assert all(a["progress"]["total"] == 2 * 41 for a in made)
    assert r.json()["cost"]["analyses"] == 2 and r.json()["cost"]["points"] == 4 * 41
    assert [m[1][0] for m in broker_messages("landscope.cpu")] == [a["id"] for a in made]

    one = client.post(API, json={"run_id": other, "spec": {"kind": "spectrum"}}).json()
    listed = client.get(API, params={"group_id": made[0]["group_id"]}).json()
    assert [a["id"] for a in listed["items"]] == [a["id"] for a in reversed(made)]
    assert client.get(API, params={"experiment_id": exp}).json()["total"] == 2
    assert [a["id"] for a in client.get(API, params={"run_id": other}).json()["items"]] == \
        [one["analyses"][0]["id"]]
    assert client.get(API).json()["total"] == 3


def test_a_run_in_an_experiment_keeps_its_experiment(client, api_db, arrange):
    exp = experiment(api_db)
    run_id = arrange(experiment_id=exp)
    (a,) = client.post(API, json={"run_id": run_id, "spec": {"kind": "slice"}}).json()[
        "analyses"]
    assert a["experiment_id"] == exp


def test_a_dry_run_returns_the_cost_and_saves_nothing(client, api_db, arrange, broker_messages):
    run_id = arrange()
    spec = {"kind": "spectrum", "steps": [0, 40],
            "spectrum": {"lanczos_steps": 20, "trace_probes": 10, "slq_steps": 30,
                         "slq_vectors": 2}}
    r = client.post(API, json={"run_id": run_id, "spec": spec, "dry_run": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["analyses"] == []
    cost = body["cost"]
    assert cost["hvps"] == 2 * (24 + 10 + 60) and cost["backward_passes"] == 2
    assert cost["points"] == 0 and cost["steps"] == 2 and cost["eval_samples"] == 2048
    assert cost["forward_equivalents"] == pytest.approx(3 * (2 + 2 * cost["hvps"]))
    assert count(api_db, Analysis) == 0
    assert broker_messages("landscope.cpu") == []


@pytest.mark.parametrize("body,code,loc,needle", [
    ({"spec": {"steps": [5]}}, 422, ["body", "spec", "steps"],
     "no snapshot at step(s) 5; it saves step 0, the last step 40, every 10 steps"),
    ({"spec": {"steps": [50]}}, 422, ["body", "spec", "steps"], "step(s) 50"),
    ({"spec": {"surprise": 1}}, 422, ["body", "spec", "surprise"], "Extra inputs"),
    ({"spec": {"kind": "surface", "directions": {"kind": "gradient"}}}, 422, ["body", "spec"],
     "does not apply to a surface"),
    ({"spec": {"x": {"points": 500}}}, 422, ["body", "spec", "x", "points"], "less than"),
    ({"spec": {"x": {"lo": "NaN"}}}, 422, ["body", "spec", "x", "lo"], "less than or equal"),
    ({"spec": {"kind": "trajectory", "steps": [10], "directions": {"kind": "pca"}}}, 409, None,
     "need at least 3 snapshots up to it; it has 0, 10"),
])
def test_bad_requests_name_the_field(client, arrange, body, code, loc, needle):
    run_id = arrange()
    r = client.post(API, json={"run_id": run_id, **body})
    assert r.status_code == code, r.text
    if loc is None:
        assert needle in r.json()["detail"]
        return
    (err,) = [e for e in r.json()["detail"] if e["loc"] == loc] or r.json()["detail"][:1]
    assert err["loc"] == loc and needle in err["msg"], r.json()
    # a validator's message in its own words, without pydantic's "Value error, " before it
    assert not err["msg"].startswith("Value error"), err


def test_a_validators_message_is_the_validators_own_words(client, arrange):
    r = client.post(API, json={"run_id": arrange(), "spec": {
        "kind": "spectrum", "spectrum": {"top_k": 10, "lanczos_steps": 5}}})
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["type"] == "value_error" and err["msg"] == "lanczos_steps must be at least top_k"
    assert err["loc"] == ["body", "spec", "spectrum"]


def test_targets_must_exist_and_be_one(client, api_db, arrange):
    r = client.post(API, json={"run_id": 999, "spec": {}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "run_id"]
    r = client.post(API, json={"experiment_id": 999})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "experiment_id"]
    r = client.post(API, json={"experiment_id": experiment(api_db)})
    assert r.status_code == 422 and "has no runs" in r.json()["detail"][0]["msg"]
    run_id = arrange()
    r = client.post(API, json={"run_id": run_id, "experiment_id": 1})
    assert r.status_code == 422 and "either run_id or experiment_id" in r.text


def test_a_step_a_running_run_has_not_reached_is_a_conflict_naming_it(client, arrange):
    run_id = arrange(status="running", step=23, saved=(0, 10, 20))
    r = client.post(API, json={"run_id": run_id, "spec": {"kind": "slice",
                                                          "steps": [10, 30, 40]}})
    assert r.status_code == 409
    assert r.json()["detail"] == (f"run {run_id} is running at step 23 and has not saved "
                                  "step(s) 30, 40 yet; analyse them once it has")
    r = client.post(API, json={"run_id": run_id, "spec": {"kind": "slice"}})  # default: 40
    assert r.status_code == 409 and "step(s) 40" in r.text
    assert client.post(API, json={"run_id": run_id, "spec": {"steps": [20]}}).status_code == 201


def test_a_finished_run_without_the_snapshot_is_a_conflict(client, arrange):
    run_id = arrange(status="diverged", step=17, saved=(0, 10))
    r = client.post(API, json={"run_id": run_id, "spec": {"kind": "spectrum"}})
    assert r.status_code == 409
    assert r.json()["detail"] == (f"run {run_id} (diverged) has no snapshot at step(s) 40; "
                                  "saved: 0, 10")


def test_interpolation_between_runs_needs_the_same_architecture(client, arrange):
    a, b = arrange(), arrange(spec=run_spec(norm="batch"))
    same = arrange(spec=run_spec(seed=3))
    spec = {"kind": "slice", "directions": {"kind": "interpolation", "source": "run"}}
    for other, code in ((b, 422), (12345, 422), (same, 201)):
        spec["directions"]["other_run"] = other
        r = client.post(API, json={"run_id": a, "spec": spec})
        assert r.status_code == code, r.text
        if code == 422:
            assert r.json()["detail"][0]["loc"] == ["body", "spec", "directions", "other_run"]


@pytest.fixture
def limited(backend: Settings) -> Iterator[TestClient]:
    from server.api.app import create_app

    settings = backend.model_copy(update={"max_analysis_points": 1000,
                                          "max_lanczos_steps": 500,
                                          "max_analysis_memory_mb": 64})
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("spec,loc,needle", [
    ({"kind": "surface", "x": {"points": 41}, "y": {"points": 31}}, ["x", "points"],
     "1,271 grid points (1 step(s)); this server allows 1,000 (LANDSCOPE_MAX_ANALYSIS_POINTS)"),
    ({"kind": "surface", "y": {"points": 101}}, ["y", "points"], "2,121 grid points"),
    ({"kind": "surface", "steps": [0, 10, 20, 30, 40], "x": {"points": 101},
      "y": {"points": 3}}, ["x", "points"], "1,515 grid points (5 step(s))"),
    ({"kind": "spectrum", "spectrum": {"slq_steps": 200}}, ["spectrum", "slq_steps"],
     "886 Hessian-vector products"),
    ({"kind": "spectrum", "spectrum": {"trace_probes": 1000}}, ["spectrum", "trace_probes"],
     "LANDSCOPE_MAX_LANCZOS_STEPS"),
    ({"kind": "surface", "batch_size": 100000, "eval_samples": None}, ["batch_size"],
     "LANDSCOPE_MAX_ANALYSIS_MEMORY_MB"),
])
def test_server_limits_are_422s_at_the_field_that_drives_them(limited, arrange, spec, loc,
                                                              needle):
    run_id = arrange(spec=run_spec(width=4000, depth=2) if "batch_size" in spec else run_spec())
    r = limited.post(API, json={"run_id": run_id, "spec": spec, "dry_run": True})
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "spec", *loc] and needle in err["msg"], err
    assert err["type"] == "server_limit"


def test_an_idempotency_key_creates_one_group(client, api_db, arrange, broker_messages):
    exp = experiment(api_db)
    arrange(experiment_id=exp)
    arrange(experiment_id=exp)
    body = {"experiment_id": exp, "spec": {"kind": "slice"}}
    headers = {"Idempotency-Key": "analyse-once"}
    first = client.post(API, json=body, headers=headers)
    again = client.post(API, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["analyses"] == first.json()["analyses"]
    assert count(api_db, Analysis) == 2 and len(broker_messages("landscope.cpu")) == 2
    r = client.post(API, json={**body, "spec": {"kind": "spectrum"}}, headers=headers)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header",
                                                                    "Idempotency-Key"]


def test_with_the_broker_down_analyses_are_saved_and_sent_once_it_is_back(sqlite_backend,
                                                                          tmp_path):
    """Enqueue after commit: a 503 names the saved analyses; the reconciler sends them."""
    from server.api.app import create_app
    from server.db.session import make_engine
    from server.queue import make_celery
    from server.services.analysis_reconcile import reconcile_analyses

    down = sqlite_backend.model_copy(update={"broker_url": "redis://127.0.0.1:18400/14"})
    engine = make_engine(down.db_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            run = Run(name="r", spec=run_spec(), queue="landscope.cpu", total=40,
                      status="succeeded", step=40)
            s.add(run)
            s.flush()
            s.add(Snapshot(run_id=run.id, step=40, path="/x", bytes=1))
            run_id = run.id
        with TestClient(create_app(down)) as c:
            r = c.post(API, json={"run_id": run_id, "spec": {"kind": "slice"}})
        assert r.status_code == 503, r.text
        body = r.json()
        (a,) = body["analyses"]
        assert body["unsent_analysis_ids"] == [a["id"]] and a["enqueued_at"] is None
        assert "will be sent when it is back" in body["detail"]

        back = sqlite_backend.model_copy(
            update={"broker_url": f"sqla+sqlite:///{tmp_path / 'back.db'}"})
        celery = make_celery(back)
        try:
            done = reconcile_analyses(make_sessionmaker(engine), celery, back, grace=0.0)
        finally:
            celery.close()
        assert done.sent == [a["id"]]
        with engine.connect() as conn:
            assert conn.scalar(select(Analysis.enqueued_at)) is not None
    finally:
        engine.dispose()
