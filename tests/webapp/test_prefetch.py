"""A compare page's data is fetched from the moment the browser asks for the page: the
finished-run cache coalesces concurrent fetches, a prefetch fetches exactly what the page's
first build asks for, and requesting the page starts one with that browser's token."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import update

from server.db.models import Run
from tests.support.seeded import seeded_experiment
from tests.support.synthetic import create_experiment
from webapp.app import TOKEN_COOKIE, create_dash
from webapp.compare import prefetch
from webapp.compare.data import CACHE, FinishedCache
from webapp.compare.page import built_layout, first_build

DATA = ("/metrics", "/probes", "/distributions")


def opening_layout(client, source, poll_ms):
    """The page for `source` as the pages build it: the first build, then the layout."""
    return built_layout(client, source, poll_ms, first_build(client, source))


def test_concurrent_fetches_of_one_key_coalesce():
    cache, release, calls = FinishedCache(), threading.Event(), []

    def fetch():
        calls.append(1)
        release.wait(10)
        return "value"

    out = []
    threads = [threading.Thread(target=lambda: out.append(
        cache.get_or_fetch(("k",), True, fetch))) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # all three asked before the first fetch returns
    release.set()
    for t in threads:
        t.join(10)
    assert out == ["value"] * 3 and len(calls) == 1
    assert cache.get_or_fetch(("k",), True, lambda: "again") == "value"  # cached
    assert cache.get_or_fetch(("k",), False, lambda: "fresh") == "fresh"  # running: not cached


def test_when_the_first_fetch_fails_a_waiter_fetches_for_itself():
    cache, started, release = FinishedCache(), threading.Event(), threading.Event()

    def failing():
        started.set()
        release.wait(10)
        raise RuntimeError("its own token was refused")

    errors = []

    def first():
        try:
            cache.get_or_fetch(("k",), True, failing)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    started.wait(10)
    waiter: list[str] = []
    w = threading.Thread(target=lambda: waiter.append(
        cache.get_or_fetch(("k",), True, lambda: "mine")))
    w.start()
    time.sleep(0.2)
    release.set()
    t.join(10)
    w.join(10)
    assert len(errors) == 1 and waiter == ["mine"]


def data_requests(api) -> list[str]:
    """Paths of the data requests (metrics, probes, histograms) `api.http` sends from now."""
    seen: list[str] = []
    api.http.event_hooks["request"].append(
        lambda r: seen.append(r.url.path) if r.url.path.endswith(DATA) else None)
    return seen


def test_a_prefetched_page_builds_without_fetching_its_finished_runs(api):
    _, done = create_experiment(api.engine, ["none", "batch"], steps=40)
    _, [live] = create_experiment(api.engine, ["layer"], steps=40, done=20, status="running")
    source = {"runs": [*done, live]}
    assert prefetch.prefetch(api.client, source) == 2
    seen = data_requests(api)
    page = str(opening_layout(api.client, source, 1000))
    assert "cmp-state" in page
    # Only the running run is fetched: what the prefetch fetched is what the build asks for.
    assert sorted(seen) == sorted(f"/api/v1/runs/{live}{p}" for p in DATA)


def test_a_prefetched_seed_group_page_builds_without_fetching_any_run(api):
    """A page drawn by seed group reads no run's scalars; the prefetch fetches what it does
    read (Fig 11's records and histograms of each group's first run), so the build fetches
    nothing per run."""
    exp, _groups = seeded_experiment(api.engine, steps=30)
    source = {"experiment": exp}
    assert prefetch.prefetch(api.client, source) == 2  # one run per group
    seen = data_requests(api)
    page = str(opening_layout(api.client, source, 1000))
    assert "cmp-state" in page
    assert not [p for p in seen if p.startswith("/api/v1/runs/")]
    # Its groups' statistics too: every run has finished, so they were cached.
    assert "/api/v1/groups/metrics" not in seen


def test_a_page_s_seed_groups_are_asked_for_once_per_set_of_runs(api):
    """The groups follow from the runs' specs (never changed) and which runs there are: the
    build after the prefetch reuses its GET /groups; a run added asks again."""
    exp, _groups = seeded_experiment(api.engine, steps=30)
    source = {"experiment": exp}
    asked: list[str] = []
    api.http.event_hooks["request"].append(
        lambda r: asked.append(r.url.path) if r.url.path == "/api/v1/groups" else None)
    prefetch.prefetch(api.client, source)
    opening_layout(api.client, source, 1000)
    opening_layout(api.client, source, 1000)
    assert asked == ["/api/v1/groups"]
    _, [added] = create_experiment(api.engine, ["layer"], steps=30)
    with api.engine.begin() as conn:  # a run joins the experiment
        conn.execute(update(Run).where(Run.id == added).values(experiment_id=exp))
    page = str(opening_layout(api.client, source, 1000))
    assert asked == ["/api/v1/groups"] * 2 and "cmp-state" in page


def test_requesting_a_page_prefetches_it_with_the_browsers_token(api_with_limits,
                                                                 monkeypatch):
    locked = api_with_limits(api_token="lab-token", protect_reads=True)
    exp, ids = create_experiment(locked.engine, ["none", "batch"], steps=40)
    app = create_dash("http://testserver/api/v1", client=locked.client)
    started = []
    real_start = prefetch.start
    monkeypatch.setattr(prefetch, "start", lambda *a: started.append(real_start(*a)))
    http = app.server.test_client()
    key = ("http://testserver/api/v1", ids[0], None, None, True)  # True: with its scalars

    assert http.get(f"/experiments/{exp}").status_code == 200
    assert started[-1].result(30) == 0 and key not in CACHE  # no token: nothing

    http.set_cookie(TOKEN_COOKIE, "lab-token")
    for path in ("/runs", "/assets/landscope.css", "/experiments/x", "/compare"):
        http.get(path)  # no compare page: no prefetch
    assert len(started) == 1
    assert http.get(f"/experiments/{exp}").status_code == 200
    assert started[-1].result(30) == 2 and key in CACHE
    assert http.get(f"/compare?runs={ids[1]},{ids[0]}").status_code == 200
    assert started[-1].result(30) == 2


def test_a_page_below_a_stripped_prefix_is_served_and_prefetched(api, monkeypatch):
    """Mounted at /dash/ behind a proxy that strips the prefix, requests arrive without it:
    Dash's strip_relative_path raises for such paths, which the prefetch hook turned into a
    500 for every GET. The hook reads the path as already relative instead."""
    exp, _ids = create_experiment(api.engine, ["none", "batch"], steps=40)
    app = create_dash("http://testserver/api/v1", client=api.client,
                      requests_pathname_prefix="/dash/")
    started = []
    real_start = prefetch.start
    monkeypatch.setattr(prefetch, "start", lambda *a: started.append(real_start(*a)))
    http = app.server.test_client()
    assert http.get("/").status_code == 200
    assert started == []  # the home page has no source
    assert http.get(f"/experiments/{exp}").status_code == 200
    assert len(started) == 1 and started[0].result(30) == 2


@pytest.mark.parametrize(("path", "query", "source"), [
    ("experiments/12", {}, {"experiment": 12}),
    ("experiments/abc", {}, None),
    ("compare", {"runs": "3,1,x"}, {"runs": [3, 1]}),
    ("compare", {}, None),
    ("runs", {"runs": "3"}, None),
])
def test_page_paths_name_their_sources(path, query, source):
    from webapp.pages import compare, experiment

    found = [s for s in (experiment.source_of(path, query), compare.source_of(path, query))
             if s is not None]
    assert found == ([source] if source else [])
