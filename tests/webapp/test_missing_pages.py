"""Pages for things that do not exist, or have nothing left, say so instead of showing
controls and empty figures: the compare page of deleted runs (all or some of them), an
experiment whose runs were all deleted, an experiment that never was; and the compare view's
callback when the runs go while the page is open. Against the real API."""

from __future__ import annotations

from contextvars import copy_context

import pytest
from dash._callback_context import context_value
from dash._utils import AttributeDict

from tests.support.synthetic import create_experiment
from tests.webapp.layout_walk import find as find_or_none
from tests.webapp.layout_walk import ids_in
from webapp.app import create_dash
from webapp.compare.callbacks import OUTPUTS
from webapp.pages import compare, experiment


def find(layout, cid: str):
    found = find_or_none(layout, cid)
    if found is None:
        raise AssertionError(f"no {cid}")
    return found


def links(layout) -> list[str]:
    out, todo = [], [layout]
    while todo:
        c = todo.pop()
        if isinstance(c, list | tuple):
            todo.extend(c)
        elif hasattr(c, "to_plotly_json"):
            if getattr(c, "href", None):
                out.append(c.href)
            todo.append(getattr(c, "children", None))
    return out


def assert_only_the_message(page, *words: str, prefix: str = "/") -> None:
    """The page says why, links back to the runs, and has no view at all."""
    text = find(page, "cmp-gone").children
    assert all(w in text for w in words), text
    assert prefix in links(page)
    shown = ids_in(page)
    assert not {i for i in shown if i.startswith(("fig-", "cmp-", "exp-tab"))} - {"cmp-gone"}


@pytest.fixture
def exp_runs(api):
    return create_experiment(api.engine, ["none", "batch"], steps=30)


def test_the_compare_page_of_a_deleted_run_says_it_was_not_found(api, exp_runs):
    _exp, (a, b) = exp_runs
    api.client.delete_run(a)
    assert_only_the_message(compare.layout(api.client, str(a)), f"#{a}", "not found")
    api.client.delete_run(b)
    assert_only_the_message(compare.layout(api.client, f"{a},{b}", prefix="/dash/"),
                            f"#{a}", f"#{b}", "not found", prefix="/dash/")


def test_the_compare_page_shows_the_runs_that_exist_and_names_the_missing(api, exp_runs):
    _exp, (a, b) = exp_runs
    api.client.delete_run(a)
    page = compare.layout(api.client, f"{a},{b},999")
    notice = find(page, "cmp-notice").children
    assert f"#{a}" in notice and "#999" in notice and f"#{b}" not in notice
    assert find(page, "cmp-title").children == f"compare runs {b}"
    assert find(page, "fig-training").figure["data"]  # the run that exists, drawn


def test_an_experiment_with_no_runs_left_says_so(api, exp_runs):
    exp, ids = exp_runs
    for rid in ids:
        api.client.delete_run(rid)
    page = experiment.layout(api.client, str(exp))
    assert_only_the_message(page, f"Experiment {exp}", "no runs left")
    assert "annotations" in str(page)  # its tags and note stay editable


def test_an_experiment_that_does_not_exist_is_only_a_message(api):
    page = experiment.layout(api.client, "999", prefix="/dash/")
    assert_only_the_message(page, "Experiment 999 not found", prefix="/dash/")
    assert "annotations" not in str(page)
    assert_only_the_message(experiment.layout(api.client, "999", tab="landscape"),
                            "Experiment 999 not found")


def test_runs_deleted_while_the_page_is_open_stop_it_with_the_reason(api, exp_runs):
    exp, ids = exp_runs
    app = create_dash("http://testserver/api/v1", client=api.client, poll_ms=500)
    drive = app.landscope_callbacks["compare_view"]["drive"]
    state = find(experiment.layout(api.client, str(exp)), "cmp-state").data
    for rid in ids:
        api.client.delete_run(rid)

    def poll():
        context_value.set(AttributeDict(triggered_inputs=[
            {"prop_id": "cmp-poll.n_intervals", "value": 1}]))
        return drive({"experiment": exp}, 1, "side", ["ics"], None, None, 1, "layer", state)

    out = dict(zip(OUTPUTS, copy_context().run(poll), strict=True))
    assert "no runs left" in out[("cmp-notice", "children")]
    assert out[("cmp-poll", "max_intervals")] == 0  # stops asking
    assert out[("cmp-live", "children")] == ""  # not "all runs finished"


def test_a_url_query_cannot_stand_in_for_the_layouts_own_parameters(api, exp_runs):
    import dash

    exp, ids = exp_runs
    create_dash("http://testserver/api/v1", client=api.client, poll_ms=500)
    pages = {p["module"]: p["layout"] for p in dash.page_registry.values()}
    odd = {"prefix": "https://elsewhere/", "poll_ms": "1", "client": "x"}
    page = pages["webapp.pages.experiment"](experiment_id="999", **odd)
    assert "/" in links(page) and "https://elsewhere/" not in links(page)
    page = pages["webapp.pages.compare"](runs=str(ids[0]), **odd)
    assert find(page, "cmp-poll").interval == 500
