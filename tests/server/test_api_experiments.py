"""/experiments: the cross product of vary over a base spec or preset, saved then enqueued."""

from __future__ import annotations

import pytest

from server.presets import get_preset
from server.spec import build_spec


def test_a_preset_experiment_is_the_cross_product_on_the_broker(client, broker_messages):
    body = {
        "name": "bn-lr",
        "preset": "quick-mlp",
        "base": {"steps": 60, "device": "cpu", "probes.landscape.every": 10},
        "vary": {"lr": [0.1, 0.3]},  # joins the preset's own vary: norm [none, batch]
    }
    r = client.post("/api/v1/experiments", json=body)
    assert r.status_code == 201, r.text
    exp = r.json()
    assert (exp["name"], exp["preset"]) == ("bn-lr", "quick-mlp")
    assert exp["status_counts"] == {"queued": 4}
    assert exp["vary"] == {"norm": ["none", "batch"], "lr": [0.1, 0.3]}
    runs = exp["runs"]
    specs = [build_spec(run["spec"]) for run in runs]
    assert [(s.norm, s.lr) for s in specs] == [
        ("none", 0.1), ("none", 0.3), ("batch", 0.1), ("batch", 0.3)
    ]
    # Same seed and data: the specs differ only in the varied keys.
    same = [s.model_dump(exclude={"norm", "lr"}) for s in specs]
    assert all(d == same[0] for d in same)
    assert specs[0].steps == 60 and specs[0].probes.landscape.every == 10
    assert specs[0].probes.ics.layers == [3, 5]  # the preset's section kept, not replaced
    assert [run["name"] for run in runs] == [s.name_hint() for s in specs]
    assert all(run["experiment_id"] == exp["id"] and run["enqueued_at"] for run in runs)
    # Sent after the commit, in order, to the queue of their device.
    assert broker_messages("landscope.cpu") == [("landscope.run", [run["id"]]) for run in runs]

    assert client.get(f"/api/v1/experiments/{exp['id']}").json() == exp


def test_vary_replaces_the_presets_key_and_seeds_can_be_varied(client, broker_messages):
    body = {"preset": "quick-dln", "vary": {"norm": ["l2"], "seed": [1, 2]}}
    exp = client.post("/api/v1/experiments", json=body).json()
    specs = [build_spec(run["spec"]) for run in exp["runs"]]
    assert [(s.norm, s.seed) for s in specs] == [("l2", 1), ("l2", 2)]
    assert [run["name"] for run in exp["runs"]] == [
        "dln25x10-l2-lr1e-06-s1", "dln25x10-l2-lr1e-06-s2"
    ]
    assert len(broker_messages("landscope.any")) == 2


def test_names_show_varied_keys_the_hint_leaves_out(client):
    exp = client.post("/api/v1/experiments", json={"vary": {"batch_size": [32, 64]}}).json()
    assert [run["name"] for run in exp["runs"]] == [
        "mlp4x128-none-lr0.1-s0-batch_size=32", "mlp4x128-none-lr0.1-s0-batch_size=64"
    ]
    assert exp["name"] == "experiment"


@pytest.mark.parametrize(
    "body,loc,needle",
    [
        ({"vary": {"seed": list(range(13)), "lr": [0.1] * 5}}, ["body", "vary"], "65 runs"),
        ({"vary": {"seed": list(range(65))}}, ["body", "vary", "seed"], "at most 64 items"),
        ({"vary": {"norm": ["none"], "seed": list(range(9)), "lr": [0.1] * 8}},
         ["body", "vary"], "72 runs"),
        ({"vary": {"norm": []}}, ["body", "vary", "norm"], "at least 1"),
        ({"vary": {"norm": "batch"}}, ["body", "vary", "norm"], "valid list"),
        ({"vary": {"probes.landscape.bogus": [1]}},
         ["body", "vary", "probes.landscape.bogus"], "unknown key"),
        ({"vary": {"lr": [0.1, -1]}}, ["body", "vary", "lr"], "greater than 0"),
        ({"vary": {"norm": ["none", "magic"]}}, ["body", "vary", "norm"], "'batch'"),
        ({"base": {"probes.landscape.every": -1}},
         ["body", "base", "probes", "landscape", "every"], "greater than or equal to 0"),
        ({"base": {"probes": {"landscape": {"every": -1}}}},
         ["body", "base", "probes", "landscape", "every"], "greater than or equal to 0"),
        ({"preset": "quick-mlp", "base": {"steps": 300_000}}, ["body", "base", "steps"],
         "at most 200000"),
        ({"preset": "quick-mlp", "base": {"lr.x": 1}}, ["body", "base", "lr", "x"],
         "not a section"),
        ({"preset": "quick-vgg", "base": {"width": 10}}, ["body", "base", "width"], "5120"),
        ({"preset": "paper-vgg16", "vary": {"batch_size": [128, 10_000]}},
         ["body", "vary", "batch_size"], "LANDSCOPE_MAX_BATCH"),
        ({"preset": "nope"}, ["body", "preset"], "unknown preset"),
        ({"name": ""}, ["body", "name"], "at least 1"),
    ],
)
def test_bad_experiments_are_422_at_the_field_path_and_save_nothing(
    sqlite_client, body, loc, needle
):
    r = sqlite_client.post("/api/v1/experiments", json=body)
    assert r.status_code == 422, r.text
    [err] = r.json()["detail"]
    assert err["loc"] == loc
    assert needle in err["msg"]
    assert sqlite_client.get("/api/v1/experiments").json()["total"] == 0
    assert sqlite_client.get("/api/v1/runs").json()["total"] == 0


def test_a_limit_the_preset_itself_breaks_is_located_where_the_request_can_fix_it(sqlite_backend):
    from fastapi.testclient import TestClient

    from server.api.app import create_app

    settings = sqlite_backend.model_copy(update={"max_steps": 5000})
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/v1/experiments", json={"preset": "paper-dln"})  # 10k steps
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "base", "steps"]
        r = c.post("/api/v1/experiments", json={"preset": "paper-dln", "base": {"steps": 5000}})
        assert r.status_code == 201
        assert len(r.json()["runs"]) == len(get_preset("paper-dln").specs())


def test_experiments_list_with_status_counts_and_pages(client, make_run):
    ids = [
        client.post("/api/v1/experiments", json={"vary": {"seed": [i, i + 10]}}).json()["id"]
        for i in range(3)
    ]
    first_run = client.get(f"/api/v1/experiments/{ids[0]}").json()["runs"][0]["id"]
    assert client.post(f"/api/v1/runs/{first_run}/cancel").status_code == 200
    page = client.get("/api/v1/experiments?limit=2&offset=1").json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)
    assert [e["id"] for e in page["items"]] == [ids[1], ids[0]]  # newest first
    assert [e["status_counts"] for e in page["items"]] == [
        {"queued": 2}, {"queued": 1, "cancelled": 1}
    ]
    assert client.get("/api/v1/experiments?limit=0").status_code == 422


def test_unknown_experiment_is_404(client):
    r = client.get("/api/v1/experiments/12345")
    assert r.status_code == 404 and r.json() == {"detail": "experiment 12345 not found"}
