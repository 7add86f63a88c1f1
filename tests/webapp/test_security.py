"""The dashboard's side of security: the header's token reaches every API call made for that
browser (reads included, so a server that protects reads still has a working dashboard), one
browser's token never serves another's request, and Dash's dev tools are off unless asked for."""

from __future__ import annotations

import contextvars
import threading

import pytest

from tests.support.synthetic import create_experiment
from tests.webapp.test_app import drive_request
from webapp.app import TOKEN_COOKIE, create_dash, with_request_token
from webapp.client import ApiError, acting_with

TOKEN = "lab-token"


@pytest.fixture
def locked(api_with_limits):
    """An API that protects reads, and a dashboard client that has no token of its own."""
    return api_with_limits(api_token=TOKEN, protect_reads=True)


def test_the_client_sends_the_token_of_the_request_it_serves(locked):
    with pytest.raises(ApiError) as err:
        locked.client.runs()
    assert err.value.status == 401
    with acting_with(TOKEN):
        assert locked.client.runs() == []
        # ...also from map's worker threads, which run in copies of the caller's context.
        locked.client.parallel = 4
        assert locked.client.map(lambda _: locked.client.runs(), range(4)) == [[]] * 4
    with pytest.raises(ApiError):
        locked.client.runs()  # the block's token is gone after it


def test_a_request_sees_its_own_cookie_and_no_one_elses():
    from webapp.client import _request_token

    seen: dict[str, str | None] = {}
    barrier = threading.Barrier(2)

    def app(environ, start_response):
        barrier.wait()  # both requests are inside at once
        seen[environ["who"]] = _request_token.get()
        return []

    wrapped = with_request_token(app)
    threads = [threading.Thread(target=lambda w=who, c=cookie: wrapped(
        {"who": w, "HTTP_COOKIE": c}, None)) for who, cookie in
        [("alice", f"{TOKEN_COOKIE}=a-token"), ("bob", "other=1")]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"alice": "a-token", "bob": None}
    assert _request_token.get() is None  # nothing leaks into the thread that served them
    assert contextvars.copy_context().get(_request_token) is None


def test_a_dashboard_over_a_read_protected_api_works_with_the_cookie(locked):
    exp, _ids = create_experiment(locked.engine, ["none", "batch"], steps=30)
    app = create_dash("http://testserver/api/v1", client=locked.client)
    http = app.server.test_client()
    assert http.get("/").status_code == 200
    body = drive_request(app, {"experiment": exp})

    refused = http.post("/_dash-update-component", json=body)
    assert "token" in refused.get_data(as_text=True).lower()  # says why, at the page

    http.set_cookie(TOKEN_COOKIE, TOKEN)
    r = http.post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.text[:500]
    figures = [v["figure"] for k, v in r.get_json()["response"].items() if k.startswith("fig-")]
    assert figures and all(f["data"] for f in figures)


def test_the_token_field_sets_a_strict_cookie(api):
    app = create_dash("http://testserver/api/v1", client=api.client)
    script = next(c["clientside_function"] or c for c in app._callback_list
                  if "token-cookie.data" in c["output"])
    js = str(app._inline_scripts) + str(script)
    assert TOKEN_COOKIE in js and "SameSite=Strict" in js and "encodeURIComponent" in js


@pytest.mark.parametrize("dev", [False, True])
def test_dev_tools_only_in_development(api, dev):
    app = create_dash("http://testserver/api/v1", client=api.client, dev=dev)
    page = app.server.test_client().get("/").get_data(as_text=True)
    assert f'"ui": {str(dev).lower()}' in page.replace('"ui":', '"ui": ').replace("  ", " ")
    assert ('"props_check": true' in page.replace('"props_check":', '"props_check": ')
            .replace("  ", " ")) is dev


def test_landscope_up_turns_dev_tools_on_only_with_landscope_dev(api):
    from fastapi.testclient import TestClient

    from landscope.cli.api_cmd import build_app

    for dev in (False, True):
        settings = api.settings.model_copy(update={"dev": dev})
        app, _ = build_app(settings, "http://127.0.0.1:9")
        with TestClient(app) as http:
            page = http.get("/").text.replace('"ui":', '"ui": ').replace("  ", " ")
            assert f'"ui": {str(dev).lower()}' in page
