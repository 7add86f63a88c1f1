"""/runs/<id>: a run's address, as the REST API spells it (GET /api/v1/runs/<id>). A run's
page is the compare view of that run alone (/compare?runs=<id>: its curves, chip, tags and
note), so this address sends the browser there, replacing itself in the history (Back does
not bounce into it again); without scripts its link does the same."""

from __future__ import annotations

import dash
from dash import Dash, Input, Output, dcc, html

from webapp.client import ApiClient
from webapp.compare.page import gone_layout

PATH_TEMPLATE = "/runs/<run_id>"

# A full load of the target that takes this address's place in the history.
GO = "function(href) { if (href) { window.location.replace(href); } return ''; }"


def run_number(run_id: str | None) -> int | None:
    """The run id in the address, or None when it is not one."""
    text = run_id or ""
    return int(text) if text.isascii() and text.isdigit() else None


def layout(run_id: str | None = None, prefix: str = "/", **_query) -> html.Div:
    number = run_number(run_id)
    if number is None:
        return gone_layout(f"No run {run_id!r}: a run's id is a number.", prefix)
    href = f"{prefix}compare?runs={number}"
    return html.Div([
        html.P([f"Run {number}'s page is its compare view: ",
                dcc.Link(href, href=href, id="run-target")], className="notice"),
        dcc.Store(id="run-goto", data=href),
        html.Span(id="run-went", hidden=True),
    ])


def register(app: Dash, client: ApiClient, poll_ms: int) -> dict:
    prefix = app.config.requests_pathname_prefix
    dash.register_page(__name__, path_template=PATH_TEMPLATE, name="Run",
                       title="Landscope · run",
                       layout=lambda run_id=None, **q: layout(run_id, prefix, **q))
    app.clientside_callback(GO, Output("run-went", "children"), Input("run-goto", "data"))
    return {}
