"""/compare?runs=1,2,3: any runs compared live, whatever experiments they belong to."""

from __future__ import annotations

import dash
from dash import Dash, html

from webapp.client import ApiClient
from webapp.compare.page import opening_layout

PATH = "/compare"


def parse_ids(text: str | None) -> list[int]:
    """'1,2, 3' -> [1, 2, 3]; anything that is not a run id is ignored."""
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if part.isdigit() and int(part) not in out:
            out.append(int(part))
    return out


def layout(client: ApiClient, runs: str | None = None, poll_ms: int = 1000,
           **_query) -> html.Div:
    ids = parse_ids(runs)
    if not ids:
        return html.Div(html.P("Choose runs to compare on the Runs page.", className="notice"))
    return opening_layout(client, {"runs": ids}, poll_ms)


def register(app: Dash, client: ApiClient, poll_ms: int) -> dict:
    """Only the route: the compare view's callbacks are registered once, by the app."""
    del app
    dash.register_page(
        __name__, path=PATH, name="Compare", title="Landscope · compare",
        layout=lambda runs=None, **q: layout(client, runs, poll_ms, **q),
    )
    return {}
