"""The compare view as a page opens: its layout arrives with the first build in it.

Built inside the page's own layout request, not as empty placeholders that a first callback
then fills: that saves a round trip and drawing every graph twice (empty, then full), about
0.1 s of a first visit (bench/RESULTS.md). The drive callback (callbacks.py) takes over
from the state this leaves: it polls, and rebuilds when a control changes."""

from __future__ import annotations

from typing import Any

from dash import html, no_update

from webapp.client import ApiClient
from webapp.compare import update as ctl
from webapp.compare.callbacks import OUTPUTS, outputs
from webapp.compare.layout import compare_layout
from webapp.compare.viewstate import ViewState
from webapp.compare.viewsync import controls_of_view


def opening_layout(client: ApiClient, source: dict[str, Any], poll_ms: int,
                   view: ViewState | None = None) -> html.Div:
    """The page for `source` with everything built, as `view` (its URL) asks. An API that
    cannot be reached or refuses shows as the notice (safe_update), with empty figures the
    first poll tries to fill."""
    view = view or ViewState()
    result = ctl.safe_update(client, ctl.FULL, source, None, controls_of_view(view))
    values = dict(zip(OUTPUTS, outputs(result, client), strict=True))
    return compare_layout(source, poll_ms,
                          {k: v for k, v in values.items() if v is not no_update}, view)
