"""The view's controls, the URL and the figures kept in step:

- every control change writes the view into the page's URL (dcc.Location refresh=False:
  the history entry changes, the page is not reloaded), so the address bar is always a
  permalink (viewstate.py); the link is shown as text and copied by a button;
- zooming the x range of one step figure sets every step figure of the page to it, in the
  browser (no server round trip), and the range goes into the URL;
- a figure's CSV button downloads what the figure draws (after grouping and smoothing).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dash import ALL, Dash, Input, Output, State, dcc, no_update
from flask import abort

from webapp.compare import update as ctl
from webapp.compare.layout import SECTIONS, VIEW_INPUTS
from webapp.compare.steps import parse_step, step_error
from webapp.compare.transform import STEP_FIGURES
from webapp.compare.viewstate import ViewState, to_query
from webapp.figures import FIGURES
from webapp.figures.export_csv import figure_csv

TITLES = {name: title for name, title, *_rest in SECTIONS}


def _on(value: Any) -> bool:
    return bool(value) and "on" in value


def with_view(controls: ctl.Controls, group: Any, center: Any, band: Any, single: Any,
              smooth: Any, x: Any, logx: Any, xrange: Any) -> ctl.Controls:
    """The drive callback's controls with the view's values (None: the control is absent,
    as in tests that call the callback directly: its default)."""
    rng = tuple(float(v) for v in xrange) if isinstance(xrange, list | tuple) \
        and len(xrange) == 2 and None not in xrange else None
    return replace(
        controls, group=None if group is None else _on(group),
        center=center if center in ("median", "mean") else "median",
        band=band if band in ("minmax", "std") else "minmax",
        single=_on(single), smooth=min(0.99, max(0.0, float(smooth or 0.0))),
        x=x if x in ("step", "epoch", "samples", "wall") else "step", logx=_on(logx),
        xrange=rng)


def controls_of_view(view: ViewState) -> ctl.Controls:
    """The controls a page opened on `view` builds with."""
    lo, hi = view.steps or (None, None)
    base = ctl.Controls() if view.logy is None else ctl.Controls(log=view.logy)
    return replace(base, arrange=view.arrange, step_from=lo, step_to=hi, layer=view.layer,
                   scope=view.scope, group=view.group, center=view.center, band=view.band,
                   single=view.single, smooth=view.smooth, x=view.x, logx=view.logx,
                   xrange=view.range, choose_log=view.logy is None)


def view_of(source: dict[str, Any], group: Any, center: Any, band: Any, single: Any,
            smooth: Any, x: Any, logx: Any, log: Any, xrange: Any, figs: Any, layer: Any,
            arrange: Any, step_from: Any, step_to: Any, scope: Any) -> ViewState:
    """The controls' values as a ViewState (what the URL says)."""
    c = with_view(ctl.Controls(), group, center, band, single, smooth, x, logx, xrange)
    shown = tuple(f for f in FIGURES if f in (figs or ()))
    steps = (parse_step(step_from), parse_step(step_to))
    return ViewState(
        runs=tuple(int(r) for r in source.get("runs", ())),
        group=c.group, center=c.center, band=c.band, smooth=round(c.smooth, 3), x=c.x,
        logx=c.logx, logy=tuple(sorted(log or ())), range=c.xrange,
        figs=None if len(shown) == len(FIGURES) else shown,
        layer=int(layer) if layer and int(layer) != 1 else None,
        single=c.single, arrange=arrange if arrange == "overlay" else "side",
        steps=None if steps == (None, None) else steps,
        scope="unit" if scope == "unit" else "layer")


def search_of(view: ViewState, current: str | None, auto: dict[str, Any] | None = None) -> str:
    """The URL's query for `view`, keeping the page's other parameters (the tab). `auto`:
    what the page chose by itself (seed groups on or off, the paper's log axes); a value
    equal to it stays out of the URL unless the URL named it already."""
    now = _parse(current)
    auto = auto or {}
    if "group" not in now and auto.get("group") is not None and view.group == auto["group"]:
        view = replace(view, group=None)
    if "logy" not in now and auto.get("logy") is not None \
            and list(view.logy or ()) == sorted(auto["logy"]):
        view = replace(view, logy=None)
    return to_query(view, {k: v for k, v in now.items() if k == "tab"})


def _parse(search: str | None) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl((search or "").lstrip("?"), keep_blank_values=True))


# The x range of the figure just zoomed, in data units, set on every other step figure.
SYNC_ZOOM = """
function() {
    const nu = dash_clientside.no_update;
    const trig = dash_clientside.callback_context.triggered;
    if (!trig.length || !trig[0].value) { return nu; }
    const src = trig[0].prop_id.split('.')[0];
    const rd = trig[0].value;
    let ax = null, lo = null, hi = null, auto = false;
    for (const k of Object.keys(rd)) {
        let m = k.match(/^(xaxis\\d*)\\.range\\[0\\]$/);
        if (m) { ax = m[1]; lo = rd[k]; hi = rd[ax + '.range[1]']; break; }
        m = k.match(/^(xaxis\\d*)\\.range$/);
        if (m && rd[k]) { ax = m[1]; lo = rd[k][0]; hi = rd[k][1]; break; }
        m = k.match(/^(xaxis\\d*)\\.autorange$/);
        if (m && rd[k]) { ax = m[1]; auto = true; break; }
    }
    if (!ax) { return nu; }
    const gd = document.querySelector('#' + src + ' .js-plotly-plot');
    const log = gd && gd.layout && gd.layout[ax] && gd.layout[ax].type === 'log';
    const range = auto ? null : (log ? [Math.pow(10, lo), Math.pow(10, hi)] : [+lo, +hi]);
    const near = (a, b) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));
    const prev = window.landscopeRange;
    if (prev !== undefined && ((range === null && prev === null) || (range && prev
            && near(range[0], prev[0]) && near(range[1], prev[1])))) { return nu; }
    window.landscopeRange = range;
    for (const name of FIGS) {
        const id = 'fig-' + name;
        if (id === src) { continue; }
        const other = document.querySelector('#' + id + ' .js-plotly-plot');
        if (!other || !other.layout || !window.Plotly) { continue; }
        const upd = {};
        for (const k of Object.keys(other.layout)) {
            if (!/^xaxis\\d*$/.test(k)) { continue; }
            if (range === null) { upd[k + '.autorange'] = true; continue; }
            const lg = other.layout[k].type === 'log';
            upd[k + '.range'] = lg ? range.map(v => Math.log10(Math.max(v, 1e-12))) : range;
        }
        window.Plotly.relayout(other, upd);
    }
    return range;
}
""".replace("FIGS", repr(list(STEP_FIGURES)))

# Another x axis: a range in the old axis' units means nothing on the new one.
RESET_RANGE = """
function(_x) { window.landscopeRange = null; return null; }
"""

LINK_TEXT = """
function(search) {
    return window.location.origin + window.location.pathname + (search || '');
}
"""

COPY_LINK = """
function(clicks) {
    if (!clicks) { return dash_clientside.no_update; }
    const url = window.location.href;
    if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(url);
    } else {  // plain http from another host: the old way
        const ta = document.createElement('textarea');
        ta.value = url; document.body.appendChild(ta); ta.select();
        document.execCommand('copy'); ta.remove();
    }
    return 'copied';
}
"""

SHOW_FIGS = """
function(figs) {
    return NAMES.map(n => (figs || []).includes(n) ? {} : {display: 'none'});
}
""".replace("NAMES", repr(list(FIGURES)))

# What a CSV button sends up: the one figure's drawn traces (the browser has them).
CSV_REQUEST = """
function(clicks) {
    const trig = dash_clientside.callback_context.triggered;
    if (!trig.length || !trig[0].value) { return dash_clientside.no_update; }
    const id = JSON.parse(trig[0].prop_id.split('.n_clicks')[0]);
    const gd = document.querySelector('#fig-' + id.fig + ' .js-plotly-plot');
    if (!gd || !gd.data) { return dash_clientside.no_update; }
    const keep = ['type', 'name', 'x', 'y', 'mode', 'fill', 'legendgroup', 'showlegend',
                  'xaxis', 'yaxis', 'opacity', 'hoverinfo', 'visible'];
    const data = gd.data.map(t => Object.fromEntries(
        keep.filter(k => t[k] !== undefined).map(k => [k, t[k]])));
    return {fig: id.fig, figure: {data: data, layout: {}}, at: Date.now()};
}
"""


def register(app: Dash) -> dict:
    """The callbacks that keep URL, controls and figures in step; returns the server ones
    by name (tests call them directly)."""
    @app.callback(
        Output("cmp-url", "search"),
        *[Input(cid, "value") for cid in VIEW_INPUTS],
        Input("cmp-log", "value"),
        Input("cmp-range", "data"),
        Input("cmp-figs", "value"),
        Input("cmp-layer", "value"),
        Input("cmp-arrange", "value"),
        Input("cmp-from", "value"),
        Input("cmp-to", "value"),
        Input("cmp-scope", "value"),
        State("cmp-source", "data"),
        State("cmp-url", "search"),
        State("cmp-state", "data"),
        # Only what the reader changes: a page opened from a link keeps that link.
        prevent_initial_call=True,
    )
    def url(group, center, band, single, smooth, x, logx, log, xrange, figs, layer, arrange,
            step_from, step_to, scope, source, current, state=None):
        view = view_of(source or {}, group, center, band, single, smooth, x, logx, log,
                       xrange, figs, layer, arrange, step_from, step_to, scope)
        search = search_of(view, current, (state or {}).get("auto"))
        return search if search != (current or "") else no_update

    @app.callback(
        Output("cmp-download", "data"),
        Input("cmp-csv-request", "data"),
        prevent_initial_call=True,
    )
    def csv(request):
        if not isinstance(request, dict) or request.get("fig") not in FIGURES \
                or not isinstance(request.get("figure"), dict):
            abort(400)
        name = request["fig"]
        figure = {**request["figure"], "layout": {"title": {"text": TITLES[name]}}}
        return dcc.send_string(figure_csv(figure), f"landscope-{name}.csv")

    app.clientside_callback(
        SYNC_ZOOM, Output("cmp-range", "data"),
        *[Input(f"fig-{n}", "relayoutData") for n in STEP_FIGURES],
        prevent_initial_call=True)
    app.clientside_callback(RESET_RANGE, Output("cmp-range", "data", allow_duplicate=True),
                            Input("cmp-x", "value"), prevent_initial_call=True)
    app.clientside_callback(LINK_TEXT, Output("cmp-link", "children"),
                            Input("cmp-url", "search"))
    app.clientside_callback(COPY_LINK, Output("cmp-copied", "children"),
                            Input("cmp-copy", "n_clicks"), prevent_initial_call=True)
    app.clientside_callback(SHOW_FIGS, *[Output(f"section-{n}", "style") for n in FIGURES],
                            Input("cmp-figs", "value"))
    app.clientside_callback(CSV_REQUEST, Output("cmp-csv-request", "data"),
                            Input({"type": "cmp-csv", "fig": ALL}, "n_clicks"),
                            prevent_initial_call=True)
    @app.callback(Output("cmp-steps-error", "children"), Input("cmp-from", "value"),
                  Input("cmp-to", "value"), prevent_initial_call=True)
    def steps_error(lo, hi):
        return step_error(lo, hi)

    return {"url": url, "csv": csv, "steps_error": steps_error}
