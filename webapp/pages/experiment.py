"""/experiments/<id>: an experiment's runs compared live, side by side and overlaid."""

from __future__ import annotations

import dash
from dash import Dash, html

from webapp.client import ApiClient
from webapp.compare import prefetch
from webapp.compare.page import opening_layout

PATH_TEMPLATE = "/experiments/<experiment_id>"


def layout(client: ApiClient, experiment_id: str | None = None, poll_ms: int = 1000,
           **_query) -> html.Div:
    try:
        exp = int(experiment_id or "")
    except ValueError:
        return html.Div(html.P(f"No experiment {experiment_id!r}.", className="notice"))
    return opening_layout(client, {"experiment": exp}, poll_ms)


def source_of(path: str, _query) -> dict | None:
    """The compare view's source for a request of this page's path (prefetch.py)."""
    head, _, rest = path.partition("/")
    return {"experiment": int(rest)} if head == "experiments" and rest.isdigit() else None


def register(app: Dash, client: ApiClient, poll_ms: int) -> dict:
    """The route, and a prefetch of its data when the page is requested; the compare view's
    callbacks are registered once, by the app."""
    prefetch.when_requested(app, client, source_of)
    dash.register_page(
        __name__, path_template=PATH_TEMPLATE, name="Experiment", title="Landscope · experiment",
        layout=lambda experiment_id=None, **q: layout(client, experiment_id, poll_ms, **q),
    )
    return {}
