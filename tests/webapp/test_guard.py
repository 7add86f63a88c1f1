"""Dash's own routes answer hand-made bad requests with 4xx, never a 500 (issue 11): a path
outside the served files, a callback body of the wrong shape, and values no component
produces."""

from __future__ import annotations

import json
import random

import pytest

from webapp.app import create_dash
from webapp.client import ApiError
from webapp.guard import callback_body_problem, callback_error

UPDATE = "/_dash-update-component"


@pytest.fixture
def dash_app(api):
    return create_dash("http://testserver/api/v1", client=api.client)


@pytest.fixture
def http(dash_app):
    client = dash_app.server.test_client()
    assert client.get("/").status_code == 200  # the page (and Dash's setup) works
    return client


def _server_callbacks(app) -> dict[str, dict]:
    return {out: cb for out, cb in app.callback_map.items() if "callback" in cb}


def _dep(d: dict, value) -> dict:
    ident = json.loads(d["id"]) if d["id"].startswith("{") else d["id"]
    return {"id": ident, "property": d["property"], "value": value}


def _body(output: str, cb: dict, pick) -> dict:
    inputs = [_dep(d, pick()) for d in cb["inputs"]]
    outs = [{"id": o.split(".")[0], "property": o.rsplit(".", 1)[-1]}
            for o in output.strip(".").split("...")]
    return {"output": output, "outputs": outs if len(outs) > 1 else outs[0], "inputs": inputs,
            "state": [_dep(d, pick()) for d in cb["state"]], "changedPropIds": []}


@pytest.mark.parametrize("path", [
    "/_dash-component-suites/dash/..%2f..%2fetc%2fpasswd",
    "/_dash-component-suites/dash/../../etc/passwd",
    "/_dash-component-suites/os/path.py",
    "/_dash-component-suites/dash/deps/nothing.js",
])
def test_paths_outside_the_served_files_are_404(http, path):
    r = http.get(path)
    assert r.status_code == 404, (path, r.status_code)


def test_a_served_file_is_still_served(http, dash_app):
    scripts = dash_app._collect_and_register_resources(dash_app.scripts.get_all_scripts())
    assert http.get(scripts[0]).status_code == 200


@pytest.mark.parametrize("raw", [
    "{bad json", "[]", "null", '"text"', '{"output": 3}', '{"output": "no-such.children"}',
    '{"inputs": []}',
])
def test_malformed_callback_bodies_are_400(http, raw):
    r = http.post(UPDATE, data=raw, content_type="application/json")
    assert r.status_code == 400, raw
    assert "detail" in r.get_json()


def test_a_body_with_the_wrong_inputs_is_400(http, dash_app):
    output, cb = next(iter(_server_callbacks(dash_app).items()))
    body = _body(output, cb, lambda: None)
    for broken in ({**body, "inputs": body["inputs"][:-1]},
                   {**body, "inputs": [{"id": "elsewhere", "property": "value"}]
                    + body["inputs"][1:]},
                   {**body, "inputs": "all"}, {**body, "outputs": 7},
                   {**body, "changedPropIds": [1]}):
        problem = callback_body_problem(broken, dash_app.callback_map)
        assert problem is not None
        r = http.post(UPDATE, json=broken)
        assert r.status_code == 400 and problem in r.get_json()["detail"]


JUNK = [None, "x", "", 0, -1, 1.5, 1e308, -1e308, True, [], {}, [1, "a"], {"a": 1}, "\x00",
        "1,2", 10**30, [[1]], {"id": 1}]


def test_values_no_component_produces_never_give_a_5xx(http, dash_app):
    rng = random.Random(11)
    seen = set()
    for output, cb in _server_callbacks(dash_app).items():
        for _ in range(12):
            r = http.post(UPDATE, json=_body(output, cb, lambda: rng.choice(JUNK)))
            assert r.status_code < 500, (output, r.status_code, r.data[:300])
            seen.add(r.status_code)
    assert 400 in seen  # the callbacks' failures on junk are answered, not crashed


def test_callback_errors_map_to_what_the_api_said():
    app = create_dash("http://127.0.0.1:9/api/v1")
    with app.server.test_request_context(UPDATE, method="POST"):
        assert callback_error(ApiError(0, "connection refused"))[1] == 503
        assert callback_error(ApiError(503, "the database cannot be reached"))[1] == 503
        assert callback_error(ApiError(401, "token"))[1] == 401
        assert callback_error(KeyError("value"))[1] == 400


def test_the_mounted_dashboard_answers_404_through_the_whole_app(tmp_path):
    from fastapi.testclient import TestClient

    from landscope.cli.api_cmd import build_app
    from server.db.migrate import upgrade
    from server.settings import Settings

    url = f"sqlite:///{tmp_path / 'l.db'}"
    upgrade(url)
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=url,
                        broker_url=f"sqla+sqlite:///{tmp_path / 'b.db'}")
    app, mounted = build_app(settings, "http://127.0.0.1:8000")
    assert mounted
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/_dash-component-suites/dash/..%2f..%2fetc%2fpasswd")
        assert r.status_code == 404
        assert c.post(UPDATE, content="{bad", headers={"content-type": "application/json"}
                      ).status_code == 400
        assert c.get("/api/v1/nope").status_code == 404
        assert c.get("/").status_code == 200
