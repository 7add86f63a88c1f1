"""The compare view's step range: typed bounds read as whole steps >= 0, and a bad one is named
beside the inputs instead of silently read as no bound (webapp/compare/steps.py)."""

from __future__ import annotations

import pytest

from tests.webapp.layout_walk import components
from webapp.app import create_dash
from webapp.compare import callbacks as cb
from webapp.compare import viewsync
from webapp.compare.layout import controls
from webapp.compare.steps import BAD, parse_step, step_error
from webapp.compare.viewstate import ViewState


@pytest.mark.parametrize(("typed", "step"), [
    (None, None), ("", None), ("  ", None), ("0", 0), (" 1000 ", 1000), ("1e3", 1000),
    ("20.0", 20), (20, 20), ("-5", None), ("2.5", None), ("abc", None), ("nan", None),
    ("inf", None),
])
def test_a_bound_is_a_whole_step_or_nothing(typed, step):
    assert parse_step(typed) == step


@pytest.mark.parametrize(("lo", "hi", "error"), [
    (None, None, ""), ("10", "", ""), ("10", "20", ""), ("-5", "20", f"from: {BAD}"),
    ("1", "x", f"to: {BAD}"), ("-1", "2.5", f"from and to: {BAD}"),
    ("30", "20", "from (30) is after to (20)"),
])
def test_the_error_names_the_bad_bound(lo, hi, error):
    assert step_error(lo, hi) == error


def test_controls_and_url_read_bounds_alike_and_skip_bad_ones():
    c = cb.controls_of("side", [], "-5", "1e3", 1, "layer")
    assert (c.step_from, c.step_to) == (None, 1000)
    view = viewsync.view_of({"runs": [1, 2]}, None, "median", "minmax", [], 0, "step", [], [],
                            None, None, 1, "side", "abc", "40", "layer")
    assert view.steps == (None, 40)


def test_the_inputs_are_text_and_their_error_shows_beside_them():
    ids = components(controls([], None, ViewState(steps=(30, 20))))
    for cid in ("cmp-from", "cmp-to"):
        assert ids[cid].type == "text"  # a number input hands Dash None for "-5"
    assert ids["cmp-steps-error"].children == "from (30) is after to (20)"
    app = create_dash("http://testserver/api/v1", poll_ms=500)
    (callback,) = [c for key, c in app.callback_map.items() if key == "cmp-steps-error.children"]
    assert {i["id"] for i in callback["inputs"]} == {"cmp-from", "cmp-to"}
