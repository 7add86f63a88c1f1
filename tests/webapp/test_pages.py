"""Pages and their callbacks, called directly with inputs (Dash returns the functions as
written), against the real API: the runs table, cancel and delete, the new-experiment form
with the API's 422s at their fields, and the compare view's callback."""

from __future__ import annotations

from contextvars import copy_context

import pytest
from dash import no_update
from dash._callback_context import context_value
from dash._utils import AttributeDict
from dash.exceptions import PreventUpdate
from sqlalchemy.orm import Session

from server.db.models import WorkerRecord, utcnow
from server.experiment_cost import duration_text
from server.queue import worker_queues
from tests.support.synthetic import create_experiment
from tests.webapp.layout_walk import components
from tests.webapp.layout_walk import find as _find
from tests.webapp.layout_walk import text as _text
from webapp import new_experiment_cost
from webapp.app import create_dash
from webapp.client import ApiClient
from webapp.compare.callbacks import OUTPUTS
from webapp.compare.layout import placeholder
from webapp.figures import FIGURES
from webapp.pages import compare, experiment, new_experiment, runs


def with_trigger(prop_ids: list[str], fn, *args):
    """Call a callback as Dash would after `prop_ids` changed (for ctx.triggered)."""
    def run():
        context_value.set(AttributeDict(triggered_inputs=[
            {"prop_id": p, "value": 1} for p in prop_ids]))
        return fn(*args)

    return copy_context().run(run)


@pytest.fixture
def app(api):
    return create_dash("http://testserver/api/v1", client=api.client, poll_ms=500)


def test_runs_table_rows_progress_and_links(api, app):
    create_experiment(api.engine, ["none", "batch"], steps=50, diverge={"none": 20})
    rows, styles, workers, *_selection = app.landscope_callbacks["runs"]["refresh"](
        0, None, None, None)
    assert [r["_status"] for r in rows] == ["succeeded", "diverged"]
    by_status = {r["_status"]: r for r in rows}
    assert by_status["diverged"]["status"] == "diverged at 20"
    assert by_status["diverged"]["progress"] == "21/50 (42%)"
    assert by_status["succeeded"]["name"].endswith(f"(/compare?runs={rows[0]['id']})")
    assert by_status["succeeded"]["csv"] == (
        f"[CSV](/api/v1/runs/{rows[0]['id']}/export?format=csv)")
    bar = next(s for s in styles if s["if"]["column_id"] == "progress")
    assert "linear-gradient" in bar["background"] and "100.0%" in bar["background"]
    assert workers.startswith("No worker online")
    only = app.landscope_callbacks["runs"]["refresh"](0, "diverged", None, None)[0]
    assert [r["_status"] for r in only] == ["diverged"]


def test_a_queued_run_no_worker_serves_shows_what_it_waits_for(api, app):
    exp = api.client.create_experiment({"preset": "quick-mlp", "base": {"device": "cuda"},
                                        "vary": {"norm": ["none"]}})
    [run] = exp["runs"]
    refresh = app.landscope_callbacks["runs"]["refresh"]
    with Session(api.engine) as s, s.begin():  # only a CPU worker is online
        s.add(WorkerRecord(name="cpu", hostname="h", pid=1, device="cpu",
                           queues=worker_queues("cpu"), last_seen=utcnow()))
    [row] = refresh(0, None, None, None)[0]
    assert (row["status"], row["_status"]) == ("queued — waiting for a cuda worker", "queued")
    with Session(api.engine) as s, s.begin():
        s.add(WorkerRecord(name="gpu", hostname="h", pid=2, device="cuda:0",
                           queues=worker_queues("cuda:0"), last_seen=utcnow()))
    [row] = refresh(0, None, None, None)[0]
    assert (row["id"], row["status"]) == (run["id"], "queued")


def test_selection_enables_what_applies_and_compare_navigates(app):
    cbs = app.landscope_callbacks["runs"]
    rows = [{"id": 1, "_status": "running"}, {"id": 2, "_status": "succeeded"}]
    assert cbs["selection"]([], rows) == (True, True, True)
    assert cbs["selection"]([1], rows) == (False, False, True)
    assert cbs["selection"]([1, 2], rows) == (False, False, False)
    assert cbs["compare"](1, [2, 1], rows) == "/compare?runs=1,2"
    assert runs.targets("cancel", [1, 2], rows) == [1]
    assert runs.targets("delete", [1, 2], rows) == [2]


def test_cancel_and_delete_through_the_api(api, app):
    exp = api.client.create_experiment({"preset": "quick-mlp", "base": {"steps": 30}})
    queued = [r["id"] for r in exp["runs"]]
    act = app.landscope_callbacks["runs"]["act"]
    rows = [{"id": i, "_status": "queued"} for i in queued]
    msg, changed, *keep = with_trigger(["runs-cancel.n_clicks"], act, 1, None, queued, rows,
                                       None)
    assert msg.startswith("Cancelled #") and keep == [no_update] * 2 and changed == msg
    assert {api.client.run(i)["status"] for i in queued} == {"cancelled"}
    rows = [{"id": i, "_status": "cancelled"} for i in queued]
    msg, _, *keep = with_trigger(["runs-confirm-delete.submit_n_clicks"], act, None, 1,
                                 queued, rows, None)
    assert msg.startswith("Deleted") and keep == [[], []] and api.client.runs() == []
    with pytest.raises(PreventUpdate):
        act(None, None, queued, rows, None)


def test_the_form_loads_presets_and_fills_from_one(app):
    cbs = app.landscope_callbacks["new_experiment"]
    presets, options, value, devices, limits = cbs["load"](1)
    assert value == "quick-mlp" and "auto" in devices and "cpu" in devices
    assert limits["max_params"] == 200_000_000 and limits["max_steps"] == 200_000
    assert any(o["value"] == "paper-vgg16" and "Fig 1, 3a, 4" in o["label"] for o in options)
    filled = cbs["fill"]("paper-dln", presets)
    fields = dict(zip(new_experiment.INPUT_FIELDS, filled[:-1], strict=True))
    assert fields["model"] == "dln" and fields["batch"] == "full" and fields["depth"] == 25
    assert "Deep linear network" in filled[-1]
    assert cbs["model_fields"]("vgg") == (None, {"display": "none"})


def test_the_form_shows_the_cost_and_local_errors(app):
    cbs = app.landscope_callbacks["new_experiment"]
    presets, *_, limits = cbs["load"](1)
    values = dict(zip(new_experiment.INPUT_FIELDS, cbs["fill"]("quick-mlp", presets)[:-1],
                      strict=True))
    args = [values.get(f) if f != "preset" else "quick-mlp" for f in
            new_experiment.formspec.FIELDS]
    cost, *errors, result = cbs["check"](*args, presets, limits)
    assert "1.35×" in str(cost) and "5–201 passes every 100 steps" in str(cost)
    assert not any(errors) and result == ""
    bad = dict(values, ics_layers="12")
    args = [bad.get(f) if f != "preset" else "quick-mlp" for f in new_experiment.formspec.FIELDS]
    _, *errors, _result = cbs["check"](*args, presets, limits)
    where = dict(zip([*new_experiment.formspec.FIELDS, "form"], errors, strict=True))
    assert "exceed" in where["ics_layers"]


def _cells(panel, row_id: str) -> list[str]:
    """The text of each cell of the estimate table's row `row_id` in a cost panel."""
    def find(node):
        if getattr(node, "id", None) == row_id:
            return node
        kids = getattr(node, "children", None)
        for kid in kids if isinstance(kids, list) else [kids]:
            if kid is not None and not isinstance(kid, str | int | float):
                hit = find(kid)
                if hit is not None:
                    return hit
        return None

    row = find(panel)
    assert row is not None, row_id
    return [str(td.children) if isinstance(td.children, str) else
            str(getattr(td.children, "children", "")) for td in row.children]


def test_the_cost_box_shows_the_estimates_and_marks_those_over_the_servers_limits(
        api_with_limits):
    from server.cost import estimate
    from server.presets import PRESETS

    limited = api_with_limits(max_params=50_000, max_cost_steps=1_000_000)
    app = create_dash("http://testserver/api/v1", client=limited.client, poll_ms=500)
    cbs = app.landscope_callbacks["new_experiment"]
    presets, *_, limits = cbs["load"](1)
    assert limits["max_params"] == 50_000  # this server's, through GET /limits
    values = dict(zip(new_experiment.INPUT_FIELDS, cbs["fill"]("quick-mlp", presets)[:-1],
                      strict=True))
    args = [values.get(f) if f != "preset" else "quick-mlp" for f in
            new_experiment.formspec.FIELDS]
    panel, *_ = cbs["check"](*args, presets, limits)
    params = max(estimate(s).params for s in PRESETS["quick-mlp"].specs())
    assert params == 73_866  # the batch-norm run: the plain one has no norm parameters
    label, value, limit, mark = _cells(panel, "new-estimate-params")
    assert (label, value, limit, mark) == ("parameters", "73,866", "50,000", "over the limit")
    label, value, limit, mark = _cells(panel, "new-estimate-cost_steps")
    assert limit == "1,000,000" and mark == ""
    assert _cells(panel, "new-estimate-dataset_mb")[3] == ""
    # The server agrees: launching is refused at the field that drives the parameter count.
    _, errors, _ = new_experiment.submit(limited.client, form_values(steps=20), None)
    assert "LANDSCOPE_MAX_PARAMS" in errors["width"]


def form_values(**changes):
    from server.presets import PRESETS
    from webapp.formspec import values_from_preset

    p = PRESETS["quick-mlp"]
    preset = {"name": p.name, "base": p.base, "vary": p.vary}
    return {**values_from_preset(preset), **changes}


def test_launching_opens_the_experiment_page(api):
    href, errors, message = new_experiment.submit(api.client, form_values(steps=50), None)
    assert not errors and href.startswith("/experiments/") and "Launched" in message
    exp = api.client.experiment(int(href.rsplit("/", 1)[1]))
    assert len(exp["runs"]) == 2 and {r["total"] for r in exp["runs"]} == {50}


def test_a_double_launch_from_one_page_visit_is_one_experiment(api):
    # The launch's Idempotency-Key comes from the page visit and the form: a second click (or
    # a retried callback) gets the first experiment back; another visit, or another form, a
    # new one.
    first = new_experiment.submit(api.client, form_values(steps=50), None, nonce="visit-a")
    again = new_experiment.submit(api.client, form_values(steps=50), None, nonce="visit-a")
    assert first[0] == again[0] and first[0].startswith("/experiments/")
    assert len(api.client.experiments()) == 1
    other_form = new_experiment.submit(api.client, form_values(steps=60), None, nonce="visit-a")
    other_visit = new_experiment.submit(api.client, form_values(steps=50), None, nonce="visit-b")
    assert len({first[0], other_form[0], other_visit[0]}) == 3
    assert len(api.client.experiments()) == 3


def test_each_visit_of_the_form_gets_its_own_launch_nonce():
    def nonce(div) -> str:
        found = [c for c in _walk(div) if getattr(c, "id", None) == "new-launch-nonce"]
        return found[0].data

    assert nonce(new_experiment.layout()) != nonce(new_experiment.layout())


def _walk(component):
    yield component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str | int | float):
            yield from _walk(child)


def test_server_limits_come_back_at_the_field(api_with_limits):
    limited = api_with_limits(max_steps=100, max_runs_per_experiment=3)
    _, errors, message = new_experiment.submit(limited.client, form_values(steps=500), None)
    assert errors == {"steps": "at most 100 steps on this server (LANDSCOPE_MAX_STEPS)"}
    assert "did not accept" in message
    _, errors, _ = new_experiment.submit(
        limited.client, form_values(steps=50, lrs="0.1, 0.2, 0.3"), None)
    assert list(errors) == ["norms"] and "6 runs" in errors["norms"]
    _, errors, _ = new_experiment.submit(limited.client, form_values(stride=-2), None)
    assert list(errors) == ["stride"]


def test_a_token_is_sent_and_a_401_says_where_to_enter_it(api_with_limits):
    guarded = api_with_limits(api_token="s3cret")
    _, errors, _ = new_experiment.submit(guarded.client, form_values(steps=20), None)
    assert "API token" in errors["form"]
    href, errors, _ = new_experiment.submit(guarded.client, form_values(steps=20), "s3cret")
    assert href and not errors


def test_launch_needs_a_click(app):
    launch = app.landscope_callbacks["new_experiment"]["launch"]
    with pytest.raises(PreventUpdate):
        launch(None, *[None] * (len(new_experiment.formspec.FIELDS) + 1))


def test_page_layouts_and_routes(api, app):
    exp, ids = create_experiment(api.engine, ["none", "batch"], steps=20)
    assert compare.parse_ids("3, 1,x,3") == [3, 1]
    assert "Choose runs" in str(compare.layout(api.client, ""))
    assert "cmp-source" in str(compare.layout(api.client, ",".join(map(str, ids))))
    assert "No experiment" in str(experiment.layout(api.client, "abc"))
    assert f"{{'experiment': {exp}}}" in str(experiment.layout(api.client, str(exp)))



def test_a_compare_page_arrives_built_as_the_callback_would_build_it(api, app):
    exp, ids = create_experiment(api.engine, ["none", "batch"], steps=40, status="running",
                                 done=30)
    page = components(experiment.layout(api.client, str(exp), poll_ms=500))
    drive = app.landscope_callbacks["compare_view"]["drive"]
    built = with_trigger([], drive, {"experiment": exp}, 0, "side", ["ics"], None, None, 1,
                         "layer", None)
    by_output = dict(zip(OUTPUTS, built, strict=True))
    for name in FIGURES:  # every figure is in the page, as the first build draws it
        assert page[f"fig-{name}"].figure == by_output[(f"fig-{name}", "figure")]
        assert page[f"fig-{name}"].figure["data"]
    assert page["cmp-state"].data == by_output[("cmp-state", "data")]
    assert page["cmp-log"].value == ["etas", "ics"]  # the paper's log axes for an MLP
    assert page["cmp-poll"].max_intervals == -1 and page["cmp-poll"].interval == 500
    assert page["cmp-live"].children.startswith("● live")
    assert len(page["cmp-header"].children) == 2 and page["cmp-notice"].children == ""
    assert [o["value"] for o in page["cmp-layer"].options] == [1, 2, 3, 4, 5]
    # The first poll goes on from the page's state: only what arrived since, as Patches.
    polled = with_trigger(["cmp-poll.n_intervals"], drive, {"experiment": exp}, 1, "side",
                          ["etas", "ics"], None, None, 1, "layer", page["cmp-state"].data)
    assert not any(isinstance(f, dict) for f in polled[:len(FIGURES)])


def test_a_compare_page_whose_api_is_down_says_so_and_its_first_poll_builds(api, app):
    exp, _ids = create_experiment(api.engine, ["none", "batch"], steps=40)
    down = ApiClient("http://127.0.0.1:9/api/v1")  # nothing listens on the discard port
    page = components(experiment.layout(down, str(exp)))
    assert "cannot be reached" in page["cmp-notice"].children
    assert page["fig-landscape"].figure == placeholder(340)  # empty, at its final size
    state = page["cmp-state"].data
    assert state["views"] == [] and page["cmp-poll"].max_intervals == -1  # keeps trying
    drive = app.landscope_callbacks["compare_view"]["drive"]
    polled = with_trigger(["cmp-poll.n_intervals"], drive, {"experiment": exp}, 1, "side",
                          ["ics"], None, None, 1, "layer", state)
    assert all(isinstance(f, dict) and f["data"] for f in polled[:len(FIGURES)])


def test_the_compare_callback_drives_the_page(api, app):
    exp, ids = create_experiment(api.engine, ["none", "batch"], steps=40)
    drive = app.landscope_callbacks["compare_view"]["drive"]
    args = ({"experiment": exp}, 0, "side", ["ics"], None, None, 1, "layer", None)
    out = with_trigger([], drive, *args)
    figs, rest = out[:10], out[10:]  # the ten figures, then the page's other outputs
    assert all(isinstance(f, dict) and f["data"] for f in figs)
    state, header, title, notice, max_intervals, layer_opts, live, log, group = rest
    assert group == []  # one run per seed group: single runs
    assert log == ["etas", "ics"]  # an MLP: the paper's log axes are ICS and Fig 11
    assert title.startswith("synthetic · experiment") and notice == "" and max_intervals == 0
    assert live == "all runs finished" and len(header) == 2
    assert [o["value"] for o in layer_opts] == [1, 2, 3, 4, 5]
    logged = with_trigger(["cmp-log.value"], drive, {"experiment": exp}, 1, "side", [],
                          None, None, 1, "layer", state)
    assert all(not isinstance(f, dict) for f in logged[:10])


def test_user_text_cannot_break_out_of_a_table_link(run_json):
    run = {**run_json(5, "noisy_batch"), "name": "x](javascript:alert(1))["}
    [row] = runs.table_rows([run], lambda i: f"/csv/{i}")
    assert row["name"] == "[x\\]\\(javascript:alert\\(1\\)\\)\\[](/compare?runs=5)"




def test_the_form_shows_the_servers_cost_of_training_default_analyses_and_snapshots(api, app):
    cbs = app.landscope_callbacks["new_experiment"]
    presets, *_, limits = cbs["load"](1)
    values = dict(zip(new_experiment.INPUT_FIELDS, cbs["fill"]("quick-mlp", presets)[:-1],
                      strict=True))
    args = [values.get(f) if f != "preset" else "quick-mlp" for f in
            new_experiment.formspec.FIELDS]
    panel, *_ = cbs["check"](*args, presets, limits)
    box = _find(panel, "new-server-cost")
    assert box is not None
    form = dict(zip(new_experiment.formspec.FIELDS, args, strict=True))
    want = api.client.experiment_cost(new_experiment.formspec.parse(form).body)
    total = want["total"]
    assert total["analyses"] == 2 * total["runs"] > 0  # quick-mlp: a surface and a spectrum
    text = _text(box)
    for run in want["runs"]:
        assert run["name"] in text
    assert "surface, spectrum" in text
    row = _text(_find(box, "new-cost-total"))
    assert f"{total['analysis_forward_passes']:,.0f}" in row
    assert f"{total['analysis_hvps']:,.0f}" in row
    cost = new_experiment_cost
    assert _text(_find(box, "new-cost-seconds")) == duration_text(total["seconds"])
    assert _text(_find(box, "new-cost-disk")) == cost._bytes(total["snapshot_bytes"])
    assert total["snapshot_bytes"] > 0 and "MiB" in _text(_find(box, "new-cost-disk"))
    # A form the server refuses (a layer over its max_width, which only the server computes)
    # says why instead of numbers, and the field says it too; a field that cannot even be read
    # asks no server.
    over = dict(form, width=limits["max_width"] + 1)
    panel, *errors, _ = cbs["check"](*[over[f] for f in new_experiment.formspec.FIELDS],
                                     presets, limits)
    assert "cannot cost this experiment" in _text(_find(panel, "new-server-cost"))
    assert "LANDSCOPE_MAX_WIDTH" in _text(_find(panel, "new-server-cost"))
    where = dict(zip([*new_experiment.formspec.FIELDS, "form"], errors, strict=True))
    assert "LANDSCOPE_MAX_WIDTH" in where["width"]
    broken = dict(form, batch="many")
    panel, *_ = cbs["check"](*[broken[f] for f in new_experiment.formspec.FIELDS], presets,
                             limits)
    assert _find(panel, "new-server-cost") is None
