"""The compare view as a page opens: its layout arrives with the first build in it.

Built inside the page's own layout request, not as empty placeholders that a first callback
then fills: that saves a round trip and drawing every graph twice (empty, then full), about
0.1 s of a first visit (bench/RESULTS.md). The drive callback (callbacks.py) takes over
from the state this leaves: it polls, and rebuilds when a control changes."""

from __future__ import annotations

from typing import Any

from dash import dcc, html, no_update

from webapp.client import ApiClient
from webapp.compare import update as ctl
from webapp.compare.callbacks import OUTPUTS, outputs
from webapp.compare.layout import compare_layout
from webapp.compare.viewstate import ViewState
from webapp.compare.viewsync import controls_of_view

# The page layouts' own parameters: a URL query of the same name must not reach them (a
# `?prefix=` would otherwise be a second value for it, and the page an error).
LAYOUT_ARGS = frozenset({"client", "poll_ms", "prefix"})


def view_query(query: dict[str, Any]) -> dict[str, Any]:
    """A page's URL query without the names of its layout's own parameters."""
    return {k: v for k, v in query.items() if k not in LAYOUT_ARGS}


def first_build(client: ApiClient, source: dict[str, Any],
                view: ViewState | None = None) -> ctl.Result:
    """The page's first build for `source`, as `view` (its URL) asks. An API that cannot be
    reached or refuses comes back as a notice (safe_update); nothing to compare, as `gone`."""
    return ctl.safe_update(client, ctl.FULL, source, None, controls_of_view(view or ViewState()))


def built_layout(client: ApiClient, source: dict[str, Any], poll_ms: int,
                 result: ctl.Result, view: ViewState | None = None) -> html.Div:
    """The page with `result` in it; a failed build shows its notice, with empty figures the
    first poll tries to fill."""
    values = dict(zip(OUTPUTS, outputs(result, client), strict=True))
    return compare_layout(source, poll_ms,
                          {k: v for k, v in values.items() if v is not no_update}, view)


def gone_layout(message: str, prefix: str = "/") -> html.Div:
    """What a page with nothing to compare shows instead of controls and empty figures:
    why, and the way back to the runs list."""
    return html.Div([
        html.P(message, className="notice", id="cmp-gone"),
        dcc.Link("Back to the runs", href=prefix, className="btn"),
    ], className="compare compare-gone")
