"""A spec naming a plug-in is accepted only when an online worker of its queue reports it.

Workers are rows here (their heartbeat info as worker/celery_app.py writes it); the real
worker reporting a really installed plug-in is tests/worker/test_plugin_worker.py. The server
never imports anything a spec names: it only compares names with what workers reported.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.models import Run, WorkerRecord, utcnow
from server.queue import worker_queues

PLUG = {"models": {"lab.net": "lab-nets 1.2"}, "datasets": {"lab.data": "lab-nets 1.2"},
        "problems": ["model 'mlp' from lab-nets 1.2: shadows a built-in: ignored"]}
SPEC = {"model": "lab.net", "model_options": {"hidden": 8}, "steps": 20}


def add_worker(engine, name: str, device: str = "cpu", plugins=PLUG, age_s: float = 0,
               stopped: bool = False) -> None:
    now = utcnow()
    with Session(engine) as s, s.begin():
        s.add(WorkerRecord(name=name, hostname="h", pid=1, device=device,
                           queues=worker_queues(device), started_at=now,
                           last_seen=now - timedelta(seconds=age_s),
                           stopped_at=now if stopped else None,
                           info={"torch": "2", "plugins": plugins}))


def post_run(client, **body):
    return client.post("/api/v1/runs", json=body)


def error(r) -> dict:
    assert r.status_code == 422, r.text
    return r.json()["detail"][0]


def test_a_plugin_no_worker_reports_is_refused_at_its_field(client, api_db):
    e = error(post_run(client, spec=SPEC))
    assert e["loc"] == ["body", "spec", "model"]
    assert "no online worker of queue 'landscope.any' has the plug-in model 'lab.net'" in e["msg"]
    assert "available: none (GET /api/v1/plugins)" in e["msg"]
    with Session(api_db) as s:
        assert s.scalars(select(Run)).all() == []


def test_a_plugin_an_online_worker_reports_is_accepted(client, api_db):
    add_worker(api_db, "w1")
    r = post_run(client, spec={**SPEC, "dataset": "lab.data",
                               "dataset_options": {"n": 64}, "device": "cpu"})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["spec"]["model"] == "lab.net" and run["spec"]["model_options"] == {"hidden": 8}
    assert run["spec"]["dataset_options"] == {"n": 64}
    assert run["name"].startswith("lab.net-none-")
    # An override names it too; a dotted override sets one option.
    r = post_run(client, preset="quick-mlp",
                 overrides={"model": "lab.net", "model_options.depth": 3})
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["model_options"] == {"depth": 3}


def test_workers_that_cannot_take_the_run_do_not_count(client, api_db):
    add_worker(api_db, "gpu", device="cuda:0")
    add_worker(api_db, "stale", age_s=3600)
    add_worker(api_db, "stopped", stopped=True)
    add_worker(api_db, "plain", plugins={"models": {"other.net": "o 1"}, "datasets": {}})
    e = error(post_run(client, spec={**SPEC, "device": "cpu"}))
    assert e["loc"] == ["body", "spec", "model"]
    assert "available: other.net; workers of another queue have it" in e["msg"]
    # The GPU worker does take a cuda run.
    assert post_run(client, spec={**SPEC, "device": "cuda"}).status_code == 201


def test_an_experiment_locates_the_plugin_in_vary(client, api_db):
    add_worker(api_db, "w1", plugins={"models": {"lab.net": "lab-nets 1.2"}, "datasets": {}})
    r = client.post("/api/v1/experiments", json={
        "base": {"model": "lab.net", "steps": 10},
        "vary": {"dataset": ["mnist1d", "lab.missing"]}})
    e = error(r)
    assert e["loc"] == ["body", "vary", "dataset"]
    assert "plug-in dataset 'lab.missing'" in e["msg"]
    r = client.post("/api/v1/experiments", json={
        "base": {"model": "lab.net", "steps": 10},
        "vary": {"model_options": [{"hidden": 4}, {"hidden": 8}]}})
    assert r.status_code == 201, r.text
    assert [run["spec"]["model_options"] for run in r.json()["runs"]] in (
        [{"hidden": 4}, {"hidden": 8}], [{"hidden": 8}, {"hidden": 4}])


@pytest.mark.parametrize("spec,loc,words", [
    ({"model": "os.system"}, ["body", "spec", "model"], "has the plug-in model 'os.system'"),
    ({"model": "os:system"}, ["body", "spec", "model"], "or a plug-in's name"),
    ({"model": "Lab.Net"}, ["body", "spec", "model"], "or a plug-in's name"),
    ({"model": "lab..net"}, ["body", "spec", "model"], "or a plug-in's name"),
    ({"dataset": "../etc/passwd"}, ["body", "spec", "dataset"], "or a plug-in's name"),
    ({"model": "x" * 101}, ["body", "spec", "model"], ""),
    ({"model": "mlp", "model_options": {"a": 1}}, ["body", "spec", "model_options"],
     "only plug-in models take options"),
    ({"model": "lab.net", "model_options": {str(i): i for i in range(65)}},
     ["body", "spec", "model_options"], "at most 64 keys"),
    ({"model": "lab.net", "model_options": {"a": ["x" * 199] * 100}},
     ["body", "spec", "model_options"], "at most 16384 bytes"),
    ({"model": "lab.net", "model_options": {"a": float("nan")}},
     ["body", "spec", "model_options", "a"], "finite"),
    ({"dataset": "digits", "dataset_options": {"size": 7}},
     ["body", "spec", "dataset_options", "size"], "from 8 to 64"),
    ({"dataset": "digits", "dataset_options": {"colour": 1}},
     ["body", "spec", "dataset_options", "colour"], "takes: size"),
])
def test_bad_plugin_names_and_options_are_422_at_their_field(client, api_db, spec, loc, words):
    add_worker(api_db, "w1")
    before = set(sys.modules)
    r = client.post("/api/v1/runs", content=_json({"spec": spec}),
                    headers={"content-type": "application/json"})
    e = error(r)
    assert e["loc"] == loc, e
    assert words in e["msg"]
    assert not {m for m in set(sys.modules) - before if "system" in m or "lab" in m}


def _json(body) -> str:
    import json

    return json.dumps(body)  # NaN as the bare token, as a careless client sends it


def test_plugin_runs_are_bounded_by_what_is_known(sqlite_client, sqlite_backend):
    from server.db.session import make_engine

    engine = make_engine(sqlite_backend.db_url)
    try:
        add_worker(engine, "w1")
    finally:
        engine.dispose()
    # Training-step cost is known from steps and probes alone, whatever the model: sharpness
    # every step costs 1 + 2 x 500 passes a step.
    steps = int(sqlite_backend.max_cost_steps // 1002) + 1
    assert steps <= sqlite_backend.max_steps
    e = error(post_run(sqlite_client, spec={
        **SPEC, "steps": steps, "probes": {"sharpness": {"every": 1, "iters": 500}}}))
    assert e["loc"] == ["body", "spec", "probes", "sharpness", "every"]
    assert "LANDSCOPE_MAX_COST_STEPS" in e["msg"]
    e = error(post_run(sqlite_client, spec={**SPEC, "batch_size": sqlite_backend.max_batch + 1}))
    assert e["loc"] == ["body", "spec", "batch_size"]


def test_the_plugin_catalogue_lists_what_online_workers_have(client, api_db):
    add_worker(api_db, "a", device="cpu")
    add_worker(api_db, "b", device="cuda:0",
               plugins={"models": {"lab.net": "lab-nets 1.3"}, "datasets": {}})
    add_worker(api_db, "gone", age_s=3600, plugins={"models": {"old.net": "o 1"}})
    add_worker(api_db, "odd", plugins="not a dict")
    got = client.get("/api/v1/plugins").json()
    assert got["models"] == {"lab.net": {
        "workers": [{"name": "a", "distribution": "lab-nets 1.2"},
                    {"name": "b", "distribution": "lab-nets 1.3"}],
        "queues": sorted({*worker_queues("cpu"), *worker_queues("cuda:0")})}}
    assert got["datasets"] == {"lab.data": {"workers": [{"name": "a",
                                                         "distribution": "lab-nets 1.2"}],
                                            "queues": sorted(worker_queues("cpu"))}}
    assert got["problems"] == ["a: model 'mlp' from lab-nets 1.2: shadows a built-in: ignored"]


def test_plugin_runs_get_no_worker_analyses_and_say_why(client, api_db):
    """The server bounds an analysis by its memory, which needs the plug-in: refused with a
    reason (never a 500 from a cost it cannot compute), for a preset's default analyses too."""
    add_worker(api_db, "w1")
    r = client.post("/api/v1/experiments", json={"preset": "quick-mlp",
                                                 "base": {"model": "lab.net"}})
    e = error(r)
    assert e["loc"] == ["body", "analyses", 0]
    assert "plug-in model 'lab.net': no worker analyses" in e["msg"]
    assert "(the preset's default analyses; [] runs none)" in e["msg"]
    r = client.post("/api/v1/experiments", json={"preset": "quick-mlp", "analyses": [],
                                                 "base": {"model": "lab.net"}})
    assert r.status_code == 201, r.text
    run_id = r.json()["runs"][0]["id"]
    r = client.post("/api/v1/analyses", json={"run_id": run_id, "spec": {"kind": "surface"},
                                              "dry_run": True})
    assert r.status_code == 409, r.text
    assert "landscope.analyse" in r.text
