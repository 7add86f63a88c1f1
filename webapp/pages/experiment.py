"""/experiments/<id>: an experiment's runs compared live, side by side and overlaid (the Runs
tab), and its loss landscapes, trajectories and Hessian spectra (the Landscape tab;
?tab=landscape opens it)."""

from __future__ import annotations

import dash
from dash import Dash, dcc, html

from webapp import annotations, experiment_delete
from webapp.client import ApiClient, ApiError
from webapp.compare import prefetch
from webapp.compare.page import built_layout, first_build, gone_layout, view_query
from webapp.compare.viewstate import from_query
from webapp.landscape import callbacks as landscape_callbacks
from webapp.landscape.layout import landscape_layout

PATH_TEMPLATE = "/experiments/<experiment_id>"


def layout(client: ApiClient, experiment_id: str | None = None, poll_ms: int = 1000,
           tab: str | None = None, prefix: str = "/", **_query) -> html.Div:
    try:
        exp = int(experiment_id or "")
    except ValueError:
        return gone_layout(f"No experiment {experiment_id!r}.", prefix)
    source, view = {"experiment": exp}, from_query(_query)
    result = first_build(client, source, view)
    # The experiment's tags and note, and its delete button, above everything
    # (webapp/annotations.py, webapp/experiment_delete.py); none when it does not exist.
    head = _head(client, exp)
    if result.gone:  # not found, or no runs left: say so, rather than tabs of empty figures
        return html.Div([head, gone_layout(result.gone, prefix)])
    # Only the chosen tab's content is mounted: the Landscape tab polls nothing while the
    # Runs tab is shown, and the other way round.
    tabs = dcc.Tabs(id="exp-tab", value="landscape" if tab == "landscape" else "runs",
                    className="exp-tabs", children=[
        dcc.Tab(label="Runs", value="runs",
                children=built_layout(client, source, poll_ms, result, view)),
        dcc.Tab(label="Landscape", value="landscape", children=landscape_layout(exp)),
    ])
    return html.Div([head, tabs])


def _head(client: ApiClient, exp: int) -> html.Div | None:
    try:
        detail = client.experiment(exp)
    except ApiError:
        return None
    return html.Div([annotations.editor("experiment", detail),
                     experiment_delete.section(exp, len(detail.get("runs") or []))])


def source_of(path: str, _query) -> dict | None:
    """The compare view's source for a request of this page's path (prefetch.py)."""
    head, _, rest = path.partition("/")
    numeric = rest.isascii() and rest.isdigit()  # "¹".isdigit(), but int("¹") raises
    return {"experiment": int(rest)} if head == "experiments" and numeric else None


def register(app: Dash, client: ApiClient, poll_ms: int) -> dict:
    """The route, and a prefetch of its data when the page is requested; the compare view's
    callbacks are registered once, by the app; the Landscape tab's here (returned)."""
    prefetch.when_requested(app, client, source_of)
    prefix = app.config.requests_pathname_prefix
    dash.register_page(
        __name__, path_template=PATH_TEMPLATE, name="Experiment", title="Landscope · experiment",
        layout=lambda experiment_id=None, **q: layout(client, experiment_id, poll_ms,
                                                      prefix=prefix, **view_query(q)),
    )
    return {**landscape_callbacks.register(app, client),
            "delete": experiment_delete.register(app, client)}
