"""What an address the dashboard has no page for shows (Dash uses the page registered from a
module named not_found_404): that there is none, and where things are, instead of Dash's
bare "404 - Page not found"."""

from __future__ import annotations

import dash
from dash import Dash, dcc, html

from webapp.client import ApiClient


def layout(prefix: str = "/", docs_url: str = "/docs", **_query) -> html.Div:
    pages = [("Runs", prefix), ("New experiment", f"{prefix}new"),
             ("Reproduction", f"{prefix}reproduction")]
    return html.Div([
        html.P("The dashboard has no page at this address.", className="notice",
               id="not-found"),
        html.P(["Its pages: ", *[x for name, href in pages
                                 for x in (dcc.Link(name, href=href), " · ")][:-1], "."]),
        html.P(["A run's page is at ", html.Code(f"{prefix}runs/<id>"), ", an experiment's at ",
                html.Code(f"{prefix}experiments/<id>"), ", any runs side by side at ",
                html.Code(f"{prefix}compare?runs=1,2"), "; the REST API is described at ",
                html.A(docs_url, href=docs_url), "."]),
    ], className="compare compare-gone")


def register(app: Dash, client: ApiClient, poll_ms: int) -> dict:
    prefix, docs = app.config.requests_pathname_prefix, client.docs_url()
    dash.register_page(__name__, path="/404", name="Not found", title="Landscope · not found",
                       layout=lambda **q: layout(prefix, docs))
    return {}
