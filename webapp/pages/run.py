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


def target(run_id: str | None, prefix: str = "/") -> str | None:
    """Where run `run_id`'s page is, or None when the id is not a run id."""
    text = run_id or ""
    return f"{prefix}compare?runs={int(text)}" if text.isascii() and text.isdigit() else None


def layout(run_id: str | None = None, prefix: str = "/", **_query) -> html.Div:
    href = target(run_id, prefix)
    if href is None:
        return gone_layout(f"No run {run_id!r}: a run's id is a number.", prefix)
    return html.Div([
        html.P(["Run ", str(int(run_id or 0)), "'s page is its compare view: ",
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
