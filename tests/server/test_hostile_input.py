"""Input that once gave a 500 (issue 11): every one is now a 4xx naming the field, on both
databases, and stores nothing. Also: unknown /api/v1 paths answer JSON, and /health at the
root is the health check, not the dashboard's page."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from server.api.errors import json_safe

JSON = {"content-type": "application/json"}


def _post(client: TestClient, path: str, raw: str):
    # Raw text: NaN, Infinity and \ud800 escapes are what a hostile client sends; json= would
    # refuse to encode some of them.
    return client.post(f"/api/v1/{path}", content=raw, headers=JSON)


def _locs(r) -> list[list]:
    """Every error's loc, and each loc's leading parts (a loc "in" it may name a parent)."""
    locs = [e["loc"] for e in r.json()["detail"]]
    return [loc[:n] for loc in locs for n in range(1, len(loc) + 1)]


@pytest.mark.parametrize("raw, loc", [
    ('{"name": NaN}', ["body", "name"]),
    ('{"preset": NaN}', ["body", "preset"]),
    ('{"name": Infinity, "preset": "quick-mlp"}', ["body", "name"]),
    ('{"name": "x\\ud800", "preset": "quick-mlp"}', ["body", "name"]),
    ('{"name": "a\\u0000b", "preset": "quick-mlp"}', ["body", "name"]),
    ('{"preset": "quick\\u0000mlp"}', ["body", "preset"]),
    ('{"preset": "quick-mlp", "base": {"steps": NaN}}', ["body", "base", "steps"]),
    ('{"preset": "quick-mlp", "base": {"dataset": "mnist\\u0000"}}', ["body", "base", "dataset"]),
    ('{"preset": "quick-mlp", "vary": {"norm": ["none", "b\\udfff"]}}',
     ["body", "vary", "norm", 1]),
    # pydantic names a bad key by its replacement characters: the loc starts with the field.
    ('{"preset": "quick-mlp", "vary": {"x\\ud800": [1]}}', ["body", "vary"]),
    ('{"preset": "quick-mlp", "base": {"\\u0000": 1}}', ["body", "base", "\u0000"]),
])
def test_experiment_bodies_that_gave_500_are_422_at_the_field(client, raw, loc):
    r = _post(client, "experiments", raw)
    assert r.status_code == 422, r.text
    assert loc in _locs(r)
    assert client.get("/api/v1/runs").json()["total"] == 0  # nothing stored


@pytest.mark.parametrize("raw, loc", [
    ('{"name": "a\\u0000b", "preset": "quick-mlp"}', ["body", "name"]),
    ('{"name": "\\ud83d", "preset": "quick-mlp"}', ["body", "name"]),
    ('{"spec": {"norm": "batch\\u0000"}}', ["body", "spec", "norm"]),
    ('{"preset": "quick-mlp", "overrides": {"lr": -Infinity}}', ["body", "overrides", "lr"]),
    # "¹".isdigit() is True but int("¹") raises: a list index it is not
    ('{"spec": {"": [{"\u00b9": null}]}}', ["body", "spec"]),
])
def test_run_bodies_that_gave_500_are_422_at_the_field(client, raw, loc):
    r = _post(client, "runs", raw)
    assert r.status_code == 422, r.text
    assert loc in _locs(r)
    assert client.get("/api/v1/runs").json()["total"] == 0


@pytest.mark.parametrize("path, loc", [
    ("/api/v1/runs?name=a%00b", ["query", "name"]),
    ("/api/v1/runs/1/metrics?keys=train%00loss", ["query", "keys"]),
    ("/api/v1/runs/1/probes?probe=land%00scape", ["query", "probe"]),
])
def test_nul_in_a_query_is_422_at_the_parameter(client, make_run, path, loc):
    make_run(status="succeeded")
    r = client.get(path)
    assert r.status_code == 422, r.text
    assert loc in _locs(r)


def test_a_lone_surrogate_in_a_query_is_harmless(client):
    # Percent-decoding replaces bytes that are not UTF-8, so no surrogate reaches a handler.
    r = client.get("/api/v1/runs?name=%ED%A0%80")
    assert r.status_code == 200 and r.json()["total"] == 0


def test_a_valid_name_still_round_trips(client):
    r = client.post("/api/v1/runs", json={"preset": "quick-mlp", "name": "bn ☃ 𝛃 run"})
    assert r.status_code == 201, r.text
    assert client.get(f"/api/v1/runs/{r.json()['id']}").json()["name"] == "bn ☃ 𝛃 run"


def test_every_422_is_valid_strict_json(sqlite_client):
    for raw in ['{"name": NaN}', '{"name": [NaN, Infinity, -Infinity]}', '{"name": "\\ud800"}',
                '{"name": {"\\udc00": NaN}}', '{"bogus": "' + "x" * 50_000 + '"}']:
        r = _post(sqlite_client, "experiments", raw)
        assert r.status_code == 422
        json.loads(r.text, parse_constant=_no_constants)  # no NaN/Infinity literals
        assert len(r.content) < 5_000  # the echo of a huge input is abridged


def test_many_errors_are_cut_to_errors_of_the_same_shape(sqlite_client):
    # 30 unknown keys: 30 errors. The answer shows 20 and counts the rest in a 21st error that
    # has the shape of the others (a plain string there broke the OpenAPI schema).
    body = {"preset": "quick-mlp", **{f"k{i}": i for i in range(30)}}
    r = sqlite_client.post("/api/v1/experiments", json=body)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert len(detail) == 21
    assert all(isinstance(e, dict) and {"type", "loc", "msg"} <= set(e) for e in detail)
    assert detail[-1]["type"] == "more_errors" and detail[-1]["msg"].startswith("10 more")


def _no_constants(name: str):
    raise AssertionError(f"{name} in a JSON answer")


def test_json_safe_keeps_what_json_carries_and_abridges_the_rest():
    assert json_safe({"a": [1, 2.5, None, True, "ok"]}) == {"a": [1, 2.5, None, True, "ok"]}
    assert json_safe([float("nan"), float("inf"), -float("inf")]) == [
        "NaN", "Infinity", "-Infinity"]
    assert json_safe("x\ud800") == "x\\ud800"
    assert json_safe(ValueError("bad")) == "bad"
    assert len(json_safe(list(range(1000)))) == 21
    assert json_safe("y" * 1000).endswith("…")


def test_unknown_api_paths_are_json_404(sqlite_client):
    for path in ("/api/v1/nope", "/api/v1/runs/1/nope", "/api/v1/", "/api/v1/health/x"):
        r = sqlite_client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/json"
        assert "no API route" in r.json()["detail"]


def test_a_wrong_method_on_a_real_path_is_405_with_allow(sqlite_client):
    r = sqlite_client.put("/api/v1/runs")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"


def test_health_at_the_root_is_the_health_check(sqlite_client):
    root, api = sqlite_client.get("/health"), sqlite_client.get("/api/v1/health")
    assert root.status_code == api.status_code == 200
    assert root.json() == api.json() and root.json()["status"] == "ok"
