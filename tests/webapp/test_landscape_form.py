"""The Landscape tab's launch form: the spec it builds, an error at each field that cannot be
used (stated as the server's own constraint), the cost panel that then says it cannot cost
the analysis, and Launch refused with the field named; against the real API where the form
talks to it (a dry run, a launch)."""

from __future__ import annotations

import pytest
from dash import dcc, html, no_update

from server.analysis_spec import MAX_GRID, MAX_SAMPLES, AnalysisSpec, Axis
from tests.webapp.landscape_data import snapshotted_experiment
from tests.webapp.layout_walk import walk
from webapp.app import create_dash
from webapp.landscape import form
from webapp.landscape import launch as ln
from webapp.landscape.layout import DEBOUNCE_S, landscape_layout


@pytest.fixture
def snapshotted(api):
    return snapshotted_experiment(api.engine)



def by_id(layout) -> dict:
    return {c.id: c for c in walk(layout) if isinstance(getattr(c, "id", None), str)}


def text_of(component) -> str:
    return " ".join(str(c.children) for c in walk(component)
                    if isinstance(c.children, str | int))


def form_of(points="21", samples="2048", steps="", kind="surface", direction="random"):
    return (kind, steps, direction, points, "batch", samples)


# -- the spec ---------------------------------------------------------------------------------

def test_the_form_builds_the_analysis_spec():
    spec = form.spec_of("surface", "800, 0 400", "random", "11", "running", "512")
    assert spec == {"kind": "surface", "bn_mode": "running", "steps": [0, 400, 800],
                    "directions": {"kind": "random"}, "x": {"points": 11},
                    "y": {"points": 11}, "eval_samples": 512}
    assert form.spec_of("slice", "", "interpolation", "41", "batch", "2,048")["x"] == {
        "points": 41, "lo": -0.5, "hi": 1.5}
    sp = form.spec_of("spectrum", None, "random", "junk: unused", "batch", "2048")
    assert sp["steps"] is None and "x" not in sp and "directions" not in sp
    assert sp["eval_samples"] == 2048


def test_the_direction_seed_and_the_options_reach_the_spec():
    spec = form.spec_of("surface", "", "random", "5", "batch", "512",
                        [form.TEST_SET, form.KEEP_1D], " 7 ")
    assert spec["directions"] == {"kind": "random", "keep_1d": True, "seed": 7}
    assert spec["test_set"] is True
    # a spectrum has no grid and no test set to evaluate, but its probe vectors take the seed
    sp = form.spec_of("spectrum", "", "random", "", "batch", "512", [form.TEST_SET], "3")
    assert sp["directions"] == {"seed": 3} and "test_set" not in sp
    # empty: the spec's own seed, shared by the experiment's analyses (nothing sent)
    assert "seed" not in form.spec_of("slice", "", "random", "5", "batch", "", [], "")[
        "directions"]


@pytest.mark.parametrize("typed", ["-1", "1.5", "seven", str(2**63)])
def test_a_seed_outside_the_specs_bounds_is_an_error_at_its_field(typed):
    got = form.read("surface", "", "random", "5", "batch", "", [], typed)
    assert got.spec is None and got.errors == {"seed": "a whole number from 0 to 2^63 - 1"}


def test_the_bounds_are_the_servers():
    assert (Axis.model_fields["points"].metadata[0].ge, MAX_GRID) == form.POINTS
    assert form.SAMPLES == (1, MAX_SAMPLES)
    assert AnalysisSpec().eval_samples == form.DEFAULT_SAMPLES


@pytest.mark.parametrize(("points", "message"), [
    ("1000", f"1 to {MAX_GRID} points, not 1,000"),
    ("-3", f"1 to {MAX_GRID} points, not -3"),
    ("+3", f"a whole number of points, 1 to {MAX_GRID}"),
    ("0", f"1 to {MAX_GRID} points, not 0"),
    ("2.5", "a whole number of points"),
    ("1e3", "a whole number of points"),
    ("eleven", "a whole number of points"),
])
def test_a_number_of_points_that_cannot_be_used_is_an_error_at_its_field(points, message):
    got = form.read(*form_of(points=points))
    assert got.spec is None and message in got.errors["points"]
    with pytest.raises(form.FormError, match="Grid points per axis: "):
        form.spec_of(*form_of(points=points))


@pytest.mark.parametrize(("samples", "message"), [
    ("0", f"1 to {MAX_SAMPLES:,} samples, not 0"),
    ("10000000", f"1 to {MAX_SAMPLES:,} samples, not 10,000,000"),
    ("1e7", "a whole number of samples"),
    ("-1", f"1 to {MAX_SAMPLES:,} samples, not -1"),
    ("１２", "a whole number of samples"),  # full-width digits: not what the server reads
])
def test_evaluation_samples_that_cannot_be_used_are_an_error_at_their_field(samples, message):
    got = form.read(*form_of(samples=samples))
    assert got.spec is None and message in got.errors["samples"]


def test_every_bad_field_is_reported_at_once_and_steps_say_their_form():
    got = form.read(*form_of(points="1000", samples="0", steps="10, last"))
    assert set(got.errors) == {"points", "samples", "steps"}
    assert "whole step numbers separated by commas" in got.errors["steps"]
    assert "at most 64 steps" in form.read(*form_of(steps=" ".join(
        str(i) for i in range(65)))).errors["steps"]
    assert form.summary(got.errors).startswith("Steps: ")


def test_an_empty_number_field_is_the_default_the_form_states():
    spec = form.spec_of(*form_of(points="", samples=" "))
    assert "x" not in spec and "eval_samples" not in spec  # the server's defaults
    parsed = AnalysisSpec.model_validate(spec)
    assert parsed.grid_shape() == (21, 21) and parsed.eval_samples == form.DEFAULT_SAMPLES
    # ...and the form says so where the fields are typed, for the kind chosen
    fields = by_id(landscape_layout(1))
    assert "empty: 21" in fields["ls-points-hint"].children
    assert f"empty: {form.DEFAULT_SAMPLES:,}" in fields["ls-samples-hint"].children
    assert ln.points_field("slice") == ("41", False, f"1 to {MAX_GRID}; empty: 41, the "
                                                     "default for this kind")
    assert ln.points_field("spectrum")[1:] == (True, "unused: a spectrum has no grid")


def test_the_number_fields_send_what_is_typed_and_follow_typing():
    """The root cause of bad numbers turning into defaults: a dcc.Input of type "number"
    sends None for a value outside its min/max, the same as for an empty field."""
    fields = by_id(landscape_layout(1))
    for name in ("ls-steps", "ls-points", "ls-samples"):
        box = fields[name]
        assert isinstance(box, dcc.Input) and box.type == "text", name
        assert not hasattr(box, "min") or box.min is None, name
        # a pause in seconds: the cost follows typing, not only leaving the field
        assert box.debounce == DEBOUNCE_S and 0 < DEBOUNCE_S <= 1, name
    assert fields["ls-points"].value == "21"
    assert {"ls-steps-error", "ls-points-error", "ls-samples-error", "ls-typed"} <= set(fields)


# -- against the API --------------------------------------------------------------------------

def test_a_bad_field_gets_its_error_no_cost_and_no_launch(api, snapshotted):
    exp, _ids = snapshotted
    for points in ("1000", "-3"):
        cost, lines = ln.preview(api.client, exp, *form_of(points=points))
        assert lines[0] == "" and lines[2] == "" and f"1 to {MAX_GRID}" in lines[1]
        said = text_of(cost)
        assert "Cannot cost this analysis." in said and "Grid points per axis" in said
        assert not any(isinstance(c, html.Table) for c in walk(cost))  # no old cost kept
    message, count, lines = ln.launch(api.client, exp, 0, *form_of(samples="0"))
    assert message.className == "error" and count is no_update
    assert message.children.startswith("Not launched. Evaluation samples: 1 to ")
    assert lines == ["", "", f"1 to {MAX_SAMPLES:,} samples, not 0", ""]
    assert api.client.analyses(experiment_id=exp) == []  # nothing was created


def test_the_servers_refusal_is_shown_at_the_field_it_is_about(api, snapshotted):
    exp, _ids = snapshotted
    cost, lines = ln.preview(api.client, exp, *form_of(steps="15"))
    assert "no snapshot at step(s) 15" in lines[0] and lines[1:] == ["", "", ""]
    assert "Cannot cost this analysis. Steps: " in text_of(cost)
    message, count, lines = ln.launch(api.client, exp, 0, *form_of(steps="15"))
    assert "Steps: run" in message.children and count is no_update
    assert "no snapshot at step(s) 15" in lines[0]
    # a good form clears the lines, and the empty fields launch the defaults they state
    cost, lines = ln.preview(api.client, exp, *form_of(points="", samples=""))
    assert lines == ["", "", "", ""] and "882" in text_of(cost)  # 2 runs x 21 x 21
    message, count, lines = ln.launch(api.client, exp, 0, *form_of(points="", samples=""))
    assert message.startswith("Launched 2 analyses") and count == 1
    assert lines == ["", "", "", ""]


def test_launch_goes_by_the_fields_as_they_are_when_clicked(api, snapshotted):
    """Launch takes the text fields from the page at the click (READ_TYPED), not their
    `value` props, which wait out the typing pause."""
    exp, _ids = snapshotted
    app = create_dash("http://testserver/api/v1", client=api.client)
    launch = app.landscope_callbacks["experiment"]["launch"]
    wiring = [c for key, c in app.callback_map.items() if "ls-points-error.children" in key
              and "ls-message.children" in key]
    assert len(wiring) == 1 and [i["id"] for i in wiring[0]["inputs"]] == ["ls-typed"]
    typed = {"n": 1, "steps": "30", "points": "1000", "samples": "512"}
    out = launch(typed, "surface", "random", "batch", [], {"experiment": exp}, 0, None)
    assert out[0].children.startswith("Not launched. Grid points per axis: 1 to ")
    typed["points"] = "3"
    out = launch(typed, "surface", "random", "batch", [], {"experiment": exp}, 0, None)
    assert out[0].startswith("Launched 2 analyses") and out[1] == 1
    made = api.client.analyses(experiment_id=exp)
    assert {(tuple(a["spec"]["steps"]), a["spec"]["x"]["points"], a["spec"]["eval_samples"])
            for a in made} == {((30,), 3, 512)}
    # the seed typed at the click and the options ticked: another direction pair, moving the
    # 1-D parameters too
    typed["seed"] = "5"
    out = launch(typed, "surface", "random", "batch", [form.KEEP_1D], {"experiment": exp}, 1,
                 None)
    assert out[0].startswith("Launched 2 analyses") and out[1] == 2
    newer = [a for a in api.client.analyses(experiment_id=exp) if a not in made]
    assert {(a["spec"]["directions"]["seed"], a["spec"]["directions"]["keep_1d"])
            for a in newer} == {(5, True)}


def test_a_server_limit_is_shown_at_the_field_that_drives_it(api_with_limits):
    """The server's own limits (GET /limits, LANDSCOPE_MAX_*) come back in its 422, at the
    spec path that drives them: shown at that field, with the server's words."""
    api = api_with_limits(max_analysis_points=100)
    exp, _ids = snapshotted_experiment(api.engine)
    cost, lines = ln.preview(api.client, exp, *form_of(points="21"))
    assert lines[0] == "" and lines[2] == "" and "100" in lines[1]
    assert "Cannot cost this analysis. Grid points per axis: " in text_of(cost)
    cost, lines = ln.preview(api.client, exp, *form_of(points="7"))  # 49 points: allowed
    assert lines == ["", "", "", ""] and "98" in text_of(cost)


def test_a_missing_token_says_where_to_enter_it(api_with_limits):
    """The Landscape form and the new-experiment form share one reading of a refusal
    (webapp/form_errors.py): a 401 tells the reader where the token goes."""
    api = api_with_limits(api_token="secret")
    exp, _ids = snapshotted_experiment(api.engine)
    message, count, _lines = ln.launch(api.client, exp, 0, *form_of())
    assert count is no_update and "Enter the server's API token at the top right." in \
        message.children
    assert api.client.analyses(experiment_id=exp) == []
