"""The compare view's Dash wiring: one server callback drives every figure after the page
opens (so a rebuild and a live patch can never interleave: Dash runs one instance of a
callback at a time per page and drops a superseded one whole), and a clientside callback for
PNG/SVG downloads.

While the callback runs, `running` disables the poll Interval, so a slow fetch is never
superseded by the next tick (which would drop its result and could starve the page).
"""

from __future__ import annotations

from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, no_update

from webapp.client import ApiClient
from webapp.compare import update as ctl
from webapp.compare import viewsync
from webapp.compare.layout import VIEW_INPUTS, run_strip
from webapp.compare.steps import parse_step
from webapp.figures import FIGURES
from webapp.runsets import RunView

# What the drive callback sets, in the order `outputs` returns them; webapp/compare/page.py
# puts the same values straight into the layout of a page that opens.
OUTPUTS: list[tuple[str, str]] = [
    *[(f"fig-{n}", "figure") for n in FIGURES],
    ("cmp-state", "data"),
    ("cmp-header", "children"),
    ("cmp-title", "children"),
    ("cmp-notice", "children"),
    ("cmp-poll", "max_intervals"),
    ("cmp-layer", "options"),
    ("cmp-live", "children"),
    ("cmp-log", "value"),  # the page's first build picks the paper's log axes
    ("cmp-group", "value"),  # ...and whether to draw seed groups
]
FULL_TRIGGERS = {"cmp-source", "cmp-arrange", "cmp-from", "cmp-to", *VIEW_INPUTS}
HIST_TRIGGERS = {"cmp-layer", "cmp-scope"}


def classify(triggered: set[str]) -> str:
    """The biggest job any of the (possibly merged) triggers asks for."""
    if not triggered or triggered & FULL_TRIGGERS:
        return ctl.FULL
    if triggered & HIST_TRIGGERS:
        return ctl.HISTS
    if "cmp-log" in triggered:
        return ctl.LOG
    return ctl.POLL


def outputs(result: ctl.Result, client: ApiClient) -> tuple:
    """Result -> the callback's outputs, no_update wherever nothing changed."""
    figs = [result.figures.get(n) for n in FIGURES]
    figs = [no_update if f is None else f for f in figs]
    views = [RunView.from_dict(v) for v in result.state.get("views", [])]
    header = run_strip(result.runs, views, client.export_url) if result.runs else no_update
    n_layers = max((v.n_layers for v in views), default=0)
    rebuilt = isinstance(result.figures.get("training"), dict)  # not a patch: the runs are new
    layer_opts = ([{"label": f"layer {i}", "value": i} for i in range(1, n_layers + 1)]
                  or [{"label": "no histograms recorded", "value": 1}]) if rebuilt \
        else no_update
    live = "● live: new points appear as they are written" if result.polling \
        else "" if result.gone else "all runs finished"
    log = list(result.log) if result.log is not None else no_update
    group = no_update if result.grouped is None else (["on"] if result.grouped else [])
    return (*figs, result.state, header, result.title or no_update, result.notice,
            -1 if result.polling else 0, layer_opts, live, log, group)


def register(app: Dash, client: ApiClient) -> dict:
    """The callbacks; returns the server one as {"drive": fn} (tests call it directly)."""
    @app.callback(
        *[Output(cid, prop) for cid, prop in OUTPUTS],
        Input("cmp-source", "data"),
        Input("cmp-poll", "n_intervals"),
        Input("cmp-arrange", "value"),
        Input("cmp-log", "value"),
        Input("cmp-from", "value"),
        Input("cmp-to", "value"),
        Input("cmp-layer", "value"),
        Input("cmp-scope", "value"),
        State("cmp-state", "data"),
        *[Input(cid, "value") for cid in VIEW_INPUTS],
        State("cmp-range", "data"),
        running=[(Output("cmp-poll", "disabled"), True, False)],
        # The page arrives built (page.py); a page without a first build (its API call
        # failed) has no views in its state, and the first poll builds it.
        prevent_initial_call=True,
    )
    def drive(source, _tick, arrange, log, step_from, step_to, layer, scope, state,
              group=None, center="median", band="minmax", single=(), smooth=0.0, x="step",
              logx=(), xrange=None):
        triggered = {p.split(".")[0] for p in ctx.triggered_prop_ids}
        controls = controls_of(arrange, log, step_from, step_to, layer, scope)
        # A new x axis drops the zoom (its range is in the old axis' units; the browser
        # clears the stored one at the same time, viewsync.RESET_RANGE).
        controls = viewsync.with_view(controls, group, center, band, single, smooth, x, logx,
                                      None if "cmp-x" in triggered else xrange)
        result = ctl.safe_update(client, classify(triggered), source, state, controls)
        return outputs(result, client)

    app.clientside_callback(
        """
        function(clicks) {
            const trig = dash_clientside.callback_context.triggered;
            if (!trig.length || !trig[0].value) { return dash_clientside.no_update; }
            const id = JSON.parse(trig[0].prop_id.split('.n_clicks')[0]);
            const gd = document.querySelector('#fig-' + id.fig + ' .js-plotly-plot');
            if (gd && window.Plotly) {
                window.Plotly.downloadImage(gd, {
                    format: id.fmt, filename: 'landscope-' + id.fig,
                    width: gd.offsetWidth, height: gd.offsetHeight,
                    scale: id.fmt === 'png' ? 2 : 1});
            }
            return id.fig + '.' + id.fmt;
        }
        """,
        Output("cmp-export-sink", "data"),
        Input({"type": "cmp-export", "fig": ALL, "fmt": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    return {"drive": drive, **viewsync.register(app)}


def controls_of(arrange: Any, log: Any, step_from: Any, step_to: Any, layer: Any,
                scope: Any) -> ctl.Controls:
    return ctl.Controls(
        arrange=arrange or "side", log=tuple(sorted(log or ())),
        step_from=parse_step(step_from), step_to=parse_step(step_to),
        layer=int(layer) if layer else None, scope=scope or "layer",
    )
