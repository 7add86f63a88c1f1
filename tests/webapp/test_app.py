"""The app as a server: what `landscope up` mounts (create_dash through a2wsgi beside the
API), its pages and routes, and the compare callback through Dash's own HTTP endpoint
(serialisation of figures and Patches included)."""

from __future__ import annotations

import json

import dash
import pytest
from fastapi.testclient import TestClient

from tests.support.synthetic import create_experiment
from webapp.app import create_dash
from webapp.figures import FIGURES


def test_landscope_up_mounts_the_dashboard_beside_the_api(api):
    from landscope.cli.api_cmd import build_app

    app, mounted = build_app(api.settings, "http://127.0.0.1:9")
    assert mounted
    with TestClient(app) as http:
        page = http.get("/")
        assert page.status_code == 200 and "<title>Landscope" in page.text
        assert http.get("/experiments/1").status_code == 200  # a page route, served by Dash
        assert http.get("/api/v1/presets").json()[0]["name"] == "paper-vgg16"  # API first
        assert http.get("/assets/landscope.css").status_code == 200


def test_pages_are_registered_with_their_paths(api):
    create_dash("http://testserver/api/v1", client=api.client)
    paths = {p["module"].rsplit(".", 1)[-1]: p["path_template"] or p["path"]
             for p in dash.page_registry.values()}
    assert paths == {"runs": "/", "new_experiment": "/new", "compare": "/compare",
                     "experiment": "/experiments/<experiment_id>",
                     "reproduction": "/reproduction", "run": "/runs/<run_id>",
                     "not_found_404": "/404"}


def drive_request(app, source, state=None, changed=()) -> dict:
    """The body the browser's renderer posts for the compare callback."""
    key = next(k for k in app.callback_map if "cmp-state.data" in k)
    spec = app.callback_map[key]
    inputs = {"cmp-source": source, "cmp-poll": 0, "cmp-arrange": "side", "cmp-log": ["ics"],
              "cmp-from": None, "cmp-to": None, "cmp-layer": 1, "cmp-scope": "layer",
              "cmp-group": None, "cmp-center": "median", "cmp-band": "minmax",
              "cmp-single": [], "cmp-smooth": 0, "cmp-x": "step", "cmp-logx": []}
    props = {"cmp-source": "data", "cmp-poll": "n_intervals"}
    return {
        "output": key,
        "outputs": [{"id": o.split(".")[0], "property": o.split(".")[1]}
                    for o in key.strip(".").split("...")],
        "inputs": [{"id": i["id"], "property": i["property"],
                    "value": inputs[i["id"]]} for i in spec["inputs"]],
        "changedPropIds": [f"{c}.{props.get(c, 'value')}" for c in changed],
        "state": [{"id": "cmp-state", "property": "data", "value": state},
                  {"id": "cmp-range", "property": "data", "value": None}],
    }


def test_the_compare_callback_over_http_builds_then_patches(api):
    exp, _ids = create_experiment(api.engine, ["none", "batch"], steps=30)
    app = create_dash("http://testserver/api/v1", client=api.client)
    http = app.server.test_client()
    assert http.get("/").status_code == 200  # the first request sets the callbacks up
    r = http.post("/_dash-update-component", json=drive_request(app, {"experiment": exp}))
    assert r.status_code == 200, r.text[:500]
    out = r.get_json()["response"]
    figs = [out[f"fig-{n}"]["figure"] for n in FIGURES]
    assert all(f["data"] for f in figs)
    assert out["cmp-poll"]["max_intervals"] == 0  # finished runs: no polling
    state = out["cmp-state"]["data"]
    # A log toggle answers with Patches, sent in Dash's patch form.
    r = http.post("/_dash-update-component", json=drive_request(
        app, {"experiment": exp}, state, changed=["cmp-log"]))
    patched = r.get_json()["response"]["fig-landscape"]["figure"]
    assert patched["__dash_patch_update"] == "__dash_patch_update"
    assert json.dumps(patched["operations"][0]["location"]) == '["layout", "yaxis", "type"]'


@pytest.mark.parametrize("prefix", ["/", "/dash/"])
def test_the_path_prefix_reaches_links(api, prefix):
    app = create_dash("http://testserver/api/v1", client=api.client,
                      requests_pathname_prefix=prefix)
    assert app.config.requests_pathname_prefix == prefix
    assert f'"href": "{prefix}new"' in json.dumps(app.layout.to_plotly_json(),
                                                  default=lambda o: o.to_plotly_json())
