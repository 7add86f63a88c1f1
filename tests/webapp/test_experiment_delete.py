"""Deleting an experiment from its page, against the real API: the page offers it only for an
experiment that exists (its emptied page too); a queued or running run keeps everything and the
message names it; done, the experiment and its runs are gone and the page goes to the runs
list."""

from __future__ import annotations

from dash import no_update

from tests.support.synthetic import create_experiment
from tests.webapp.layout_walk import ids_in
from webapp import experiment_delete
from webapp.app import create_dash
from webapp.client import ApiError
from webapp.pages import experiment


def test_the_page_offers_delete_for_an_experiment_that_exists(api):
    exp, ids = create_experiment(api.engine, ["none", "batch"], steps=20)
    assert "exp-delete" in ids_in(experiment.layout(api.client, str(exp)))
    assert "exp-delete" not in ids_in(experiment.layout(api.client, "999"))
    for rid in ids:  # emptied: its page says so, and can still delete it
        api.client.delete_run(rid)
    assert "exp-delete" in ids_in(experiment.layout(api.client, str(exp)))


def test_delete_refuses_while_a_run_is_active_then_deletes_everything(api):
    busy, busy_runs = create_experiment(api.engine, ["none", "batch"], steps=20,
                                        status="running")
    msg, go = experiment_delete.delete(api.client, busy, None, "/")
    assert msg.startswith("Not deleted:") and "cancel them first" in msg
    assert all(str(r) in msg for r in busy_runs) and go is no_update
    assert [r["id"] for r in api.client.experiment(busy)["runs"]] == busy_runs

    exp, ids = create_experiment(api.engine, ["none", "batch"], steps=20)
    submit = create_dash("http://testserver/api/v1", client=api.client).landscope_callbacks[
        "experiment"]["delete"]["submit"]
    assert submit(1, exp, None) == (f"Deleted experiment {exp}.", "/")
    for rid in ids:
        try:
            api.client.run(rid)
            raise AssertionError(f"run {rid} is still there")
        except ApiError as exc:
            assert exc.status == 404
    assert [e["id"] for e in api.client.experiments()] == [busy]
