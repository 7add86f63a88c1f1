"""The Runs table's selection follows run ids, never row positions: its callbacks called
directly against the real API. Dash's DataTable ticks rows by index into its data
(`selected_rows`) and derives `selected_row_ids` from those indices on each click, so every
callback that changes the rows or the selection must set both (webapp/pages/runs.py)."""

from __future__ import annotations

from contextvars import copy_context

import pytest
from dash import no_update
from dash._callback_context import context_value
from dash._utils import AttributeDict

from tests.support.synthetic import create_experiment
from webapp.app import create_dash
from webapp.pages import runs


@pytest.fixture
def cbs(api):
    return create_dash("http://testserver/api/v1", client=api.client,
                       poll_ms=500).landscope_callbacks["runs"]


def refresh(cbs, ids, indices):
    """The poll: (rows, selected_rows, selected_row_ids) with the browser's selection."""
    rows, _styles, _workers, sel_rows, sel_ids = cbs["refresh"](
        0, None, None, None, None, None, None, None, None, ids, indices)
    return rows, sel_rows, sel_ids


def _ids(rows) -> list[int]:
    return [r["id"] for r in rows]


def _delete(cbs, ids, rows):
    def run():
        context_value.set(AttributeDict(triggered_inputs=[
            {"prop_id": "runs-confirm-delete.submit_n_clicks", "value": 1}]))
        return cbs["act"](None, 1, ids, rows, None)

    return copy_context().run(run)


def test_a_delete_clears_the_ticks_and_the_ids_together(api, cbs):
    _exp, ids = create_experiment(api.engine, ["none", "batch", "layer"], steps=20)
    rows, *_ = refresh(cbs, [], [])
    assert _ids(rows) == sorted(ids, reverse=True)
    top = rows[0]["id"]
    msg, _changed, sel_ids, sel_rows = _delete(cbs, [top], rows)
    assert msg == f"Deleted #{top}. " and (sel_ids, sel_rows) == ([], [])
    # The poll after it: the row that moved into the deleted one's place is not selected.
    rows, sel_rows, sel_ids = refresh(cbs, [], [])
    assert top not in _ids(rows) and (sel_rows, sel_ids) == (no_update, no_update)


def test_the_ticks_move_with_their_runs_when_new_runs_arrive(api, cbs):
    _exp, ids = create_experiment(api.engine, ["none", "batch", "layer"], steps=20)
    rows, *_ = refresh(cbs, [], [])
    pick = ids[0]  # the oldest: the bottom row
    at = _ids(rows).index(pick)
    # A poll that changes nothing leaves the browser's selection alone.
    assert refresh(cbs, [pick], [at])[1:] == (no_update, no_update)
    added = [r["id"] for r in api.client.create_experiment({"preset": "quick-mlp"})["runs"]]
    rows, sel_rows, sel_ids = refresh(cbs, [pick], [at])
    assert _ids(rows)[:len(added)] == sorted(added, reverse=True)
    assert [rows[i]["id"] for i in sel_rows] == [pick] and sel_ids == [pick]


def test_a_selected_run_deleted_elsewhere_leaves_the_selection(api, cbs):
    _exp, ids = create_experiment(api.engine, ["none", "batch", "layer"], steps=20)
    rows, *_ = refresh(cbs, [], [])
    keep, gone = ids[0], ids[2]
    sel = [_ids(rows).index(keep), _ids(rows).index(gone)]
    api.client.delete_run(gone)  # by another browser, or the CLI
    rows, sel_rows, sel_ids = refresh(cbs, [keep, gone], sel)
    assert [rows[i]["id"] for i in sel_rows] == [keep] and sel_ids == [keep]
    # A filter the API refuses empties the table, and the selection with it.
    *_, sel_rows, sel_ids = cbs["refresh"](0, None, None, None, None, None, None, None, "a/b",
                                           [keep], sel_rows)
    assert (sel_rows, sel_ids) == ([], [])


def test_actions_apply_only_to_runs_the_table_shows(cbs):
    rows = [{"id": 1, "_status": "running"}, {"id": 2, "_status": "succeeded"}]
    assert runs.targets("cancel", [1, 2, 9], rows) == [1]  # 9 is not shown
    assert runs.targets("delete", [2, 9], rows) == [2]
    assert cbs["compare"](1, [9, 2], rows) == "/compare?runs=2"
    assert cbs["compare"](1, [9], rows) is no_update
    assert cbs["selection"]([9], rows) == (True, True, True)
    assert runs.selection_for([2, 9, 1], rows) == ([0, 1], [2, 1])


def test_the_buttons_follow_a_selected_run_that_finishes(api, cbs):
    """Selected while running, a run that succeeds makes Delete apply and Cancel not: the
    buttons are recomputed from every poll's rows, not only from clicks."""
    from sqlalchemy import update

    from server.db.models import Run, utcnow

    app = create_dash("http://testserver/api/v1", client=api.client, poll_ms=500)
    (cb,) = [c for key, c in app.callback_map.items() if "runs-delete.disabled" in key]
    assert {i["id"] + "." + i["property"] for i in cb["inputs"]} == {
        "runs-table.selected_row_ids", "runs-table.data"}
    _exp, ids = create_experiment(api.engine, ["none"], steps=20, status="running")
    rows, *_ = refresh(cbs, [], [])
    assert cbs["selection"](ids, rows) == (False, False, True)  # cancel yes, delete no
    with api.engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == ids[0])
                     .values(status="succeeded", finished_at=utcnow()))
    rows, *_ = refresh(cbs, ids, [0])
    assert cbs["selection"](ids, rows) == (False, True, False)  # now delete, not cancel
