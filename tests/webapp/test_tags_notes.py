"""The runs page's filters (driving the API's, not filtering in the browser), and tags and a
note shown and edited on the run and experiment pages, against the real API."""

from __future__ import annotations

import pytest

from tests.support.synthetic import create_experiment
from tests.webapp.test_pages import components
from webapp import annotations
from webapp.app import create_dash
from webapp.pages import compare, experiment, runs


@pytest.fixture
def app(api):
    return create_dash("http://testserver/api/v1", client=api.client, poll_ms=500)


@pytest.fixture
def two_experiments(api):
    """(experiment a, its run ids (none, batch)), (experiment b, its run ids (batch, layer)):
    b's runs on another dataset and model; a's batch run tagged, b's layer run noted."""
    a = create_experiment(api.engine, ["none", "batch"], steps=20)
    b = create_experiment(api.engine, ["batch", "layer"], steps=20,
                          spec_changes={"dataset": "digits", "model": "dln",
                                        "loss": "sum_squares"})
    api.client.annotate_run(a[1][1], tags=["baseline", "paper:fig3"])
    api.client.annotate_run(b[1][0], tags=["baseline"])
    api.client.annotate_run(b[1][1], note="first line of a long note\n" + "x" * 100)
    return a, b


def _ids(rows) -> list[int]:
    return [r["id"] for r in rows]


def test_each_filter_asks_the_api(api, app, two_experiments):
    (ea, (a_none, a_batch)), (eb, (b_batch, b_layer)) = two_experiments
    refresh = app.landscope_callbacks["runs"]["refresh"]

    def shown(status=None, name=None, norm=None, model=None, dataset=None, exp=None, tag=None):
        rows, styles, line, *_ = refresh(0, status, name, None, norm, model, dataset, exp, tag)
        assert len(styles) >= len(rows) and not line.startswith("No runs"), line
        return _ids(rows)

    assert shown() == [b_layer, b_batch, a_batch, a_none]
    assert shown(norm="batch") == [b_batch, a_batch]
    assert shown(model="dln") == [b_layer, b_batch] == shown(dataset=" digits ")
    assert shown(exp=ea) == [a_batch, a_none]
    assert shown(tag="baseline") == [b_batch, a_batch]
    assert shown(tag="baseline, paper:fig3") == [a_batch]  # every tag given
    assert shown(tag="baseline", exp=eb, norm="batch") == [b_batch]
    assert shown(tag="nobody") == [] and shown(norm="group") == []
    # A tag the API refuses empties the table and says why, rather than showing every run.
    rows, _styles, line, *_ = refresh(0, None, None, None, None, None, None, None, "a/b")
    assert rows == [] and line.startswith("No runs") and "tag" in line


def test_the_table_shows_tags_and_the_start_of_a_note(api, app, two_experiments):
    (_ea, (_a_none, a_batch)), (_eb, (_b_batch, b_layer)) = two_experiments
    rows = {r["id"]: r for r in app.landscope_callbacks["runs"]["refresh"](
        0, None, None, None)[0]}
    assert rows[a_batch]["tags"] == "baseline paper:fig3" and rows[a_batch]["note"] == ""
    assert rows[b_layer]["note"] == "first line of a long note…"
    assert runs._short("x" * 70) == "x" * 60 + "…" and runs._short("short") == "short"


def test_filters_open_from_the_url(api, two_experiments):
    (ea, _), _ = two_experiments
    page = components(runs.layout("/", api.client, status="running", norm="batch",
                                  model="dln", tag="baseline", experiment=str(ea)))
    assert page["runs-status"].value == "running" and page["runs-norm"].value == "batch"
    assert page["runs-model"].value == "dln" and page["runs-tag"].value == "baseline"
    assert page["runs-experiment"].value == ea
    assert {o["value"] for o in page["runs-experiment"].options} >= {ea}
    # Malformed values open the page unfiltered instead of failing.
    assert runs.filter_values({"status": "lost", "norm": "bogus", "experiment": "¹",
                               "model": ["a", "b"]}) == {}
    assert runs.filter_values({"experiment": "99"}) == {"experiment": 99}
    assert runs.experiment_options(None, 99) == [{"label": "#99", "value": 99}]


def test_a_run_s_tags_and_note_are_edited_on_its_page(api, app, two_experiments):
    (_ea, (a_none, _a_batch)), _ = two_experiments
    text = str(compare.layout(api.client, str(a_none)))
    assert "'type': 'ann-note', 'kind': 'run'" in text and "cmp-source" in text
    assert "ann-note" not in str(compare.layout(api.client, f"{a_none},{_a_batch}"))
    save = app.landscope_callbacks["annotations"]["save"]
    ident = {"type": "ann-save", "kind": "run", "id": a_none}
    chips, msg, tags, note = save(1, ident, "lr=0.1, seed:1  lr=0.1", "too high", None)
    assert msg == "Saved." and tags == "lr=0.1, seed:1" and note == "too high"
    assert [c.children for c in chips] == ["lr=0.1", "seed:1"]
    got = api.client.run(a_none)
    assert got["tags"] == ["lr=0.1", "seed:1"] and got["note"] == "too high"
    # A bad tag: the API's 422, in the editor's words, and nothing changed.
    chips, msg, tags, note = save(2, ident, "ok, not/ok", "", None)
    assert "'not/ok'" in msg and "letters" in msg
    assert api.client.run(a_none)["tags"] == ["lr=0.1", "seed:1"]
    # Clearing both.
    chips, msg, tags, note = save(3, ident, "", "  ", None)
    assert (msg, tags, note) == ("Saved.", "", "") and api.client.run(a_none)["note"] is None
    assert chips[0].children == "no tags"


def test_an_experiment_s_tags_and_note_are_edited_on_its_page(api, app, two_experiments):
    (ea, (a_none, _)), _ = two_experiments
    api.client.annotate_experiment(ea, tags=["sweep"], note="lr sweep")
    text = str(experiment.layout(api.client, str(ea)))
    assert "'type': 'ann-tags', 'kind': 'experiment'" in text and "lr sweep" in text
    assert f"{{'experiment': {ea}}}" in text
    save = app.landscope_callbacks["annotations"]["save"]
    out = save(1, {"type": "ann-save", "kind": "experiment", "id": ea}, "sweep v2", "",
               None)
    assert out[1:] == ("Saved.", "sweep, v2", "")
    got = api.client.experiment(ea)
    assert got["tags"] == ["sweep", "v2"] and got["note"] is None
    assert got["runs"][0]["tags"] == []  # the runs keep their own
    # An experiment that does not exist: the page shows no editor, the callback says so.
    assert "ann-tags" not in str(experiment.layout(api.client, "999"))
    out = save(1, {"type": "ann-save", "kind": "experiment", "id": 999}, "a", "", None)
    assert "not found" in out[1]
    assert annotations.parse_tags(" a,,b\tc ") == ["a", "b", "c"]


def test_the_client_adds_and_removes_one_tag(api, two_experiments):
    (_ea, (a_none, _)), _ = two_experiments
    assert api.client.tag_run(a_none, "lr=0.1")["tags"] == ["lr=0.1"]
    assert api.client.tag_run(a_none, "ü")["tags"] == ["lr=0.1", "ü"]
    assert api.client.untag_run(a_none, "lr=0.1")["tags"] == ["ü"]
    assert api.client.annotate_run(a_none, note="n")["tags"] == ["ü"]  # tags left alone
    assert api.client.filter_runs(tags=["ü"], source="service")[0]["id"] == a_none
