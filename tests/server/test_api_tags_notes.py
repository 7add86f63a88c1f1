"""Tags and notes on runs and experiments through the API, and the runs listing's filters, on
both databases: every filter's answer is checked against the same filter applied in Python to
every run."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.db.models import Experiment
from server.db.session import make_sessionmaker
from server.settings import Settings

API = "/api/v1"


def _tags(client, path: str) -> list[str]:
    return client.get(f"{API}{path}").json()["tags"]


def _loc(r) -> list:
    assert r.status_code == 422, r.text
    return [d["loc"] for d in r.json()["detail"]]


# -- runs: PATCH, POST/DELETE one tag ---------------------------------------------------------


def test_a_run_s_tags_and_note_round_trip(client, make_run):
    rid = make_run(status="running")
    assert _tags(client, f"/runs/{rid}") == [] and client.get(f"{API}/runs/{rid}").json()[
        "note"] is None
    r = client.patch(f"{API}/runs/{rid}", json={"tags": ["bn", "baseline", "bn"],
                                                "note": "lr too high"})
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == ["baseline", "bn"] and r.json()["note"] == "lr too high"
    got = client.get(f"{API}/runs/{rid}").json()
    assert got["tags"] == ["baseline", "bn"] and got["note"] == "lr too high"
    assert got["status"] == "running"  # a running run can be annotated; its state is untouched
    # A field left out stays; the tags given replace the set.
    r = client.patch(f"{API}/runs/{rid}", json={"tags": ["bn", "lr=0.1"]})
    assert r.json()["tags"] == ["bn", "lr=0.1"] and r.json()["note"] == "lr too high"
    r = client.patch(f"{API}/runs/{rid}", json={"note": None})
    assert r.json()["tags"] == ["bn", "lr=0.1"] and r.json()["note"] is None
    assert client.patch(f"{API}/runs/{rid}", json={"note": "  \n"}).json()["note"] is None
    assert client.patch(f"{API}/runs/{rid}", json={"tags": None}).json()["tags"] == []
    # One tag at a time; adding twice or removing what is not there changes nothing.
    assert client.post(f"{API}/runs/{rid}/tags/paper:fig3").json()["tags"] == ["paper:fig3"]
    assert client.post(f"{API}/runs/{rid}/tags/paper:fig3").json()["tags"] == ["paper:fig3"]
    assert client.post(f"{API}/runs/{rid}/tags/ü-1").json()["tags"] == ["paper:fig3", "ü-1"]
    assert client.delete(f"{API}/runs/{rid}/tags/nope").json()["tags"] == ["paper:fig3", "ü-1"]
    assert client.delete(f"{API}/runs/{rid}/tags/paper:fig3").json()["tags"] == ["ü-1"]
    assert client.get(f"{API}/runs").json()["items"][0]["tags"] == ["ü-1"]


def test_deleting_a_run_deletes_its_tags(client, make_run, api_db):
    from sqlalchemy import text

    rid = make_run(status="succeeded")
    client.patch(f"{API}/runs/{rid}", json={"tags": ["a", "b"]})
    assert client.delete(f"{API}/runs/{rid}").status_code == 204
    with api_db.connect() as c:
        assert c.execute(text("SELECT COUNT(*) FROM run_tags")).scalar() == 0


@pytest.mark.parametrize(("body", "loc"), [
    ({"tags": [""]}, ["body", "tags", 0]),
    ({"tags": ["ok", "has space"]}, ["body", "tags", 1]),
    ({"tags": ["a,b"]}, ["body", "tags", 0]),
    ({"tags": ["a/b"]}, ["body", "tags", 0]),
    ({"tags": ["x" * 65]}, ["body", "tags", 0]),
    ({"tags": ["nul\x00"]}, ["body", "tags", 0]),
    ({"tags": [f"t{i}" for i in range(33)]}, ["body", "tags"]),
    ({"tags": "bn"}, ["body", "tags"]),
    ({"note": "x" * 10_001}, ["body", "note"]),
    ({"note": "\ud800"}, ["body", "note"]),
    ({"note": 3}, ["body", "note"]),
    ({"color": "red"}, ["body", "color"]),
])
def test_bad_annotations_are_422_at_the_field(sqlite_client, body, loc):
    rid = sqlite_client.post(f"{API}/runs", json={"spec": {"steps": 5}}).json()["id"]
    # json.dumps escapes a lone surrogate as JSON's \ud800 (httpx would refuse to encode it).
    raw = {"content": json.dumps(body), "headers": {"Content-Type": "application/json"}}
    assert loc in _loc(sqlite_client.patch(f"{API}/runs/{rid}", **raw))
    assert loc in _loc(sqlite_client.patch(f"{API}/experiments/1", **raw))  # checked first


def test_tag_limits_hold_one_at_a_time_too(sqlite_client):
    rid = sqlite_client.post(f"{API}/runs", json={"spec": {"steps": 5}}).json()["id"]
    # 32 distinct tags (and duplicates, which do not count) are fine; a 33rd is not.
    tags = [f"t{i}" for i in range(32)]
    assert sqlite_client.patch(f"{API}/runs/{rid}", json={"tags": tags + tags}).status_code == 200
    assert _loc(sqlite_client.post(f"{API}/runs/{rid}/tags/t32")) == [["path", "tag"]]
    assert sqlite_client.post(f"{API}/runs/{rid}/tags/t0").status_code == 200  # already there
    assert _loc(sqlite_client.post(f"{API}/runs/{rid}/tags/a%20b")) == [["path", "tag"]]
    assert _loc(sqlite_client.patch(f"{API}/runs/0", json={})) == [["path", "run_id"]]
    assert sqlite_client.patch(f"{API}/runs/999", json={"note": "x"}).status_code == 404
    assert sqlite_client.post(f"{API}/runs/999/tags/x").status_code == 404
    assert sqlite_client.patch(f"{API}/experiments/999", json={}).status_code == 404
    note = "ü" * 10_000  # the limit is characters, not bytes
    assert sqlite_client.patch(f"{API}/runs/{rid}", json={"note": note}).json()["note"] == note


# -- experiments ------------------------------------------------------------------------------


def test_an_experiment_s_tags_and_note_round_trip(client):
    exp = client.post(f"{API}/experiments", json={"preset": "quick-mlp",
                                                  "vary": {"norm": ["none", "batch"]}}).json()
    eid, rids = exp["id"], [r["id"] for r in exp["runs"]]
    assert exp["tags"] == [] and exp["note"] is None
    r = client.patch(f"{API}/experiments/{eid}", json={"tags": ["sweep"], "note": "first try"})
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == ["sweep"] and r.json()["note"] == "first try"
    assert r.json()["status_counts"] == {"queued": 2}
    client.post(f"{API}/runs/{rids[0]}/tags/bn")
    detail = client.get(f"{API}/experiments/{eid}").json()
    assert detail["tags"] == ["sweep"] and detail["note"] == "first try"
    assert [r["tags"] for r in detail["runs"]] == [["bn"], []]  # the runs keep their own
    listed = client.get(f"{API}/experiments").json()["items"]
    assert listed[0]["tags"] == ["sweep"] and listed[0]["note"] == "first try"
    assert client.post(f"{API}/experiments/{eid}/tags/v2").json()["tags"] == ["sweep", "v2"]
    assert client.delete(f"{API}/experiments/{eid}/tags/sweep").json()["tags"] == ["v2"]
    other = client.post(f"{API}/experiments", json={"preset": "quick-mlp",
                                                    "vary": {"seed": [1]}}).json()["id"]
    ids = lambda q: [e["id"] for e in client.get(f"{API}/experiments{q}").json()["items"]]  # noqa: E731
    assert ids("") == [other, eid] and ids("?tag=v2") == [eid] and ids("?tag=v2&tag=x") == []


# -- tokens -----------------------------------------------------------------------------------

TOKEN = "s3cret-token"


@pytest.fixture
def guarded(sqlite_backend: Settings) -> Iterator[TestClient]:
    from server.api.app import create_app

    settings = Settings.model_validate({**sqlite_backend.model_dump(), "api_token": TOKEN})
    with TestClient(create_app(settings)) as c:
        yield c


def test_annotating_needs_the_token(guarded):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    rid = guarded.post(f"{API}/runs", json={"spec": {"steps": 5}}, headers=auth).json()["id"]
    with make_sessionmaker_for(guarded) as session:
        session.add(Experiment(name="e", preset=None, base_spec={}, vary={}))
    for method, path, kw in [("patch", f"/runs/{rid}", {"json": {"note": "x"}}),
                             ("post", f"/runs/{rid}/tags/a", {}),
                             ("delete", f"/runs/{rid}/tags/a", {}),
                             ("patch", "/experiments/1", {"json": {"note": "x"}}),
                             ("post", "/experiments/1/tags/a", {}),
                             ("delete", "/experiments/1/tags/a", {})]:
        r = getattr(guarded, method)(f"{API}{path}", **kw)
        assert r.status_code == 401, (method, path, r.text)
        assert getattr(guarded, method)(f"{API}{path}", headers=auth, **kw).status_code == 200
    assert guarded.get(f"{API}/runs/{rid}").json()["note"] == "x"


def make_sessionmaker_for(client: TestClient):
    return make_sessionmaker(client.app.state.engine).begin()


# -- the runs listing's filters ---------------------------------------------------------------

SPECS = [  # (source, spec or config, tags)
    ("service", {"norm": "batch", "model": "mlp", "dataset": "mnist1d"}, ["a", "b"]),
    ("service", {"norm": "none", "model": "mlp", "dataset": "mnist1d"}, ["a"]),
    ("service", {"norm": "batch", "model": "vgg", "dataset": "cifar10"}, []),
    ("service", {"norm": "layer", "model": "resnet", "dataset": "cifar10"}, ["b"]),
    ("sdk", {"norm": "batch", "model": "mine", "dataset": "mnist1d"}, ["a"]),
    ("sdk", None, ["b"]),
]


@pytest.fixture
def catalogue(client, make_run, api_db) -> list[dict]:
    """Runs of every kind, in two experiments, with the truth to filter in Python."""
    with make_sessionmaker(api_db).begin() as session:
        exps = [Experiment(name=f"e{i}", preset=None, base_spec={}, vary={}) for i in (1, 2)]
        session.add_all(exps)
        session.flush()
        eids = [e.id for e in exps]
    truth = []
    for i, ((source, fields, tags), status) in enumerate(
            zip(SPECS * 2, itertools.cycle(["succeeded", "failed", "running"]), strict=False)):
        eid = eids[i % 2] if source == "service" else None
        row = {"spec": fields or {}} if source == "service" else {"config": fields}
        rid = make_run(status=status, source=source, experiment_id=eid, **row)
        if tags:
            client.patch(f"{API}/runs/{rid}", json={"tags": tags})
        truth.append({"id": rid, "status": status, "source": source, "experiment_id": eid,
                      "tags": set(tags), **(fields or {})})
    return truth


QUERIES = [
    {}, {"status": "succeeded"}, {"norm": "batch"}, {"norm": "none"}, {"model": "mlp"},
    {"dataset": "cifar10"}, {"source": "sdk"}, {"source": "service", "norm": "batch"},
    {"tag": ["a"]}, {"tag": ["a", "b"]}, {"tag": ["b"], "norm": "layer"}, {"tag": ["zzz"]},
    {"experiment": 0}, {"experiment": 1, "tag": ["a"]}, {"norm": "batch", "model": "mine"},
    {"dataset": "mnist1d", "status": "running", "tag": ["a"]}, {"norm": "ba"},
]


def test_runs_filters_match_a_filter_in_python(client, catalogue):
    exp_ids = sorted({r["experiment_id"] for r in catalogue if r["experiment_id"]})
    for query in QUERIES:  # one catalogue for all (it takes a while to write on PostgreSQL)
        params = dict(query)
        if "experiment" in params:
            params["experiment_id"] = exp_ids[params.pop("experiment")]

        def keep(run: dict, params=params) -> bool:
            for k, v in params.items():
                if k == "tag":
                    if not set(v) <= run["tags"]:
                        return False
                elif run.get(k) != v:
                    return False
            return True

        expected = sorted((r["id"] for r in catalogue if keep(r)), reverse=True)
        r = client.get(f"{API}/runs", params={**params, "limit": 500})
        assert r.status_code == 200, r.text
        got = [x["id"] for x in r.json()["items"]]
        assert got == expected and r.json()["total"] == len(expected), query
        page = client.get(f"{API}/runs", params={**params, "limit": 2, "offset": 1}).json()
        assert [x["id"] for x in page["items"]] == expected[1:3], query
        assert page["total"] == len(expected), query


@pytest.mark.parametrize(("params", "loc"), [
    ({"tag": "a b"}, ["query", "tag", 0]),
    ({"tag": ["ok", "x" * 65]}, ["query", "tag", 1]),
    ({"tag": [f"t{i}" for i in range(33)]}, ["query", "tag"]),
    ({"source": "cli"}, ["query", "source"]),
    ({"norm": "x" * 201}, ["query", "norm"]),
    ({"model": "a\x00"}, ["query", "model"]),
    ({"status": "lost"}, ["query", "status"]),
])
def test_bad_filters_are_422_at_the_parameter(sqlite_client, params, loc):
    assert loc in _loc(sqlite_client.get(f"{API}/runs", params=params))


# -- concurrent changes -----------------------------------------------------------------------


def test_concurrent_tag_changes_apply_one_after_the_other(backend):
    """Twelve requests at once on one run, each adding its own tag and a shared one, or
    replacing the set: never a 5xx, and the end state is one of the orders they could run in
    (every added tag there, each once)."""
    from server.api.app import create_app
    from tests.support.concurrency import concurrently

    app = create_app(backend)
    with TestClient(app) as c:
        rid = c.post(f"{API}/runs", json={"spec": {"steps": 5}}).json()["id"]

        def send(client, i):
            if i % 2:
                return client.post(f"{API}/runs/{rid}/tags/t{i}")
            return client.patch(f"{API}/runs/{rid}", json={"tags": ["shared", f"t{i}"],
                                                          "note": f"n{i}"})

        answers = concurrently(app, 12, send)
        assert [r.status_code for r in answers] == [200] * 12, [
            r.text for r in answers if r.status_code != 200]
        final = c.get(f"{API}/runs/{rid}").json()
    # The last PATCH replaced the set; every POST after it added its tag.
    assert "shared" in final["tags"] and final["note"] in {f"n{i}" for i in range(0, 12, 2)}
    assert len(final["tags"]) == len(set(final["tags"]))
    patched = int(final["note"][1:])
    assert f"t{patched}" in final["tags"]
    assert set(final["tags"]) <= {"shared", *(f"t{i}" for i in range(12))}
