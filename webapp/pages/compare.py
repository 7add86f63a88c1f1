"""/compare?runs=1,2,3: any runs compared live, whatever experiments they belong to. The rest of
the query is the view (seed groups, smoothing, x axis, zoom...: webapp/compare/viewstate.py)."""

from __future__ import annotations

import dash
from dash import Dash, html

from webapp import annotations
from webapp.client import ApiClient
from webapp.compare import prefetch
from webapp.compare.page import built_layout, first_build, gone_layout, view_query
from webapp.compare.viewstate import from_query

PATH = "/compare"


def parse_ids(text: str | None) -> list[int]:
    """'1,2, 3' -> [1, 2, 3]; anything that is not a run id is ignored."""
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if part.isascii() and part.isdigit() and int(part) not in out:
            out.append(int(part))
    return out


def layout(client: ApiClient, runs: str | None = None, poll_ms: int = 1000,
           prefix: str = "/", **_query) -> html.Div:
    ids = parse_ids(runs)
    if not ids:
        return html.Div(html.P("Choose runs to compare on the Runs page.", className="notice"))
    # The rest of the query is the view (a permalink: webapp/compare/viewstate.py).
    source, view = {"runs": ids}, from_query({**_query, "runs": runs})
    result = first_build(client, source, view)
    if result.gone:  # none of the runs exists: say so, rather than draw empty figures
        return gone_layout(result.gone, prefix)
    page = built_layout(client, source, poll_ms, result, view)
    if len(ids) == 1:  # one run: its page, with its tags and note (webapp/annotations.py)
        return html.Div([annotations.section(client, "run", ids[0]), page])
    return page


def source_of(path: str, query) -> dict | None:
    """The compare view's source for a request of this page's path (prefetch.py)."""
    ids = parse_ids(query.get("runs")) if path == PATH.strip("/") else []
    return {"runs": ids} if ids else None


def register(app: Dash, client: ApiClient, poll_ms: int) -> dict:
    """The route, and a prefetch of its data when the page is requested; the compare view's
    callbacks are registered once, by the app."""
    prefetch.when_requested(app, client, source_of)
    prefix = app.config.requests_pathname_prefix
    dash.register_page(
        __name__, path=PATH, name="Compare", title="Landscope · compare",
        layout=lambda runs=None, **q: layout(client, runs, poll_ms, prefix, **view_query(q)),
    )
    return {}
