"""The compare view's page structure: the run strip, the controls, and a section per figure
saying what it shows and which of the paper's figures it reproduces. Shared by the
experiment page and the compare page; only the `source` store differs."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from webapp.compare.steps import step_error
from webapp.compare.viewstate import MAX_SMOOTH, ViewState
from webapp.components import progress_bar, source_badge, status_badge, swatch
from webapp.environment_view import environment_block
from webapp.figures import DEFAULT_LOG, TITLES
from webapp.runsets import RunView
from webapp.style import graph_config

# (figure, title, paper reference, what it shows, height); the titles are the figures' own
# (webapp/figures TITLES), which their exported images carry
SECTIONS: list[tuple[str, str, str, str, int]] = [
    ("training", TITLES["training"], "Fig 1, 5, 12",
     "Loss and accuracy. Solid: the training minibatch at each step (the light band is the "
     "min-max of each downsampled stretch); dotted: the held-out test set.", 340),
    ("landscape", TITLES["landscape"], "Fig 4a, 10a",
     "At each probed step t, the loss l(η) = L(w_t − η∇L) for every η in S = multipliers × LR; "
     "the band spans its min to max. A narrow band is a smooth landscape.", 340),
    ("gradpred", TITLES["gradpred"], "Fig 4b, 10b",
     "‖∇L(w_t − η∇L) − ∇L(w_t)‖₂ over η ∈ S: how much the gradient changes a step away. "
     "Small means the gradient predicts the next one.", 340),
    ("beta", TITLES["beta"], "Fig 4c, 10c",
     "max over η of the gradient change per unit of distance moved: the local Lipschitz "
     "constant of the gradient along the path.", 320),
    ("etas", TITLES["etas"], "Fig 11",
     "d(η) against η, one line per probed step, coloured from early (dark) to late (bright).",
     320),
    ("ics", TITLES["ics"], "Fig 3, Definition 2.1",
     "G: the gradient of layer i; G′: the same after every earlier layer took this step's "
     "update. BatchNorm does not make ‖G − G′‖ smaller — the paper's point.", 480),
    ("dist_heat", TITLES["dist_heat"], "Fig 1c, 2, 6, 9",
     "The share of a layer's activations (after normalisation, before the nonlinearity) in "
     "each bin, over training; outer columns hold what fell outside the histogram range.",
     320),
    ("dist_overlay", TITLES["dist_overlay"], "Fig 2 (overlaid)",
     "Every run's 5–95 % and 25–75 % quantile bands and median on one axis.", 360),
    ("sharpness", TITLES["sharpness"], "beyond the paper",
     "Top Hessian eigenvalue on the minibatch against the edge of stability 2/LR.", 320),
    ("dynamics", TITLES["dynamics"], "beyond the paper",
     "‖∇L(w_t)‖₂ and ‖w_t − w_0‖₂.", 300),
]
# The view's controls that rebuild the figures (the drive callback's extra inputs, in order).
VIEW_INPUTS = ("cmp-group", "cmp-center", "cmp-band", "cmp-single", "cmp-smooth", "cmp-x",
               "cmp-logx")
X_CHOICES = [("step", "step"), ("epoch", "epoch"), ("samples", "samples seen"),
             ("wall", "wall time")]
LOG_CHOICES = [("training", "loss"), ("landscape", "landscape"), ("gradpred", "predictiveness"),
               ("beta", "β"), ("etas", "d(η)"), ("ics", "ICS"), ("sharpness", "sharpness"),
               ("dynamics", "grad norm")]


def placeholder(height: int) -> dict[str, Any]:
    """An empty figure of the final height, so the page does not jump when data arrives."""
    return {"data": [], "layout": {"height": height, "xaxis": {"visible": False},
                                   "yaxis": {"visible": False},
                                   "margin": {"l": 0, "r": 0, "t": 0, "b": 0}}}


def export_buttons(name: str) -> html.Div:
    return html.Div([
        *[html.Button(fmt.upper(), id={"type": "cmp-export", "fig": name, "fmt": fmt},
                      className="btn btn-small", title=f"download this figure as {fmt.upper()}")
          for fmt in ("png", "svg")],
        html.Button("CSV", id={"type": "cmp-csv", "fig": name}, className="btn btn-small",
                    title="download the data this figure draws (after grouping and "
                    "smoothing) as CSV"),
    ], className="export")


def section(name: str, title: str, ref: str, text: str, height: int,
            extra: Any = None, figure: dict[str, Any] | None = None,
            shown: bool = True) -> html.Section:
    return html.Section([
        html.Div([
            html.Div([html.H3(title), html.Span(ref, className="paper-ref")],
                     className="section-title"),
            html.Div([extra, export_buttons(name)] if extra else [export_buttons(name)],
                     className="section-tools"),
        ], className="section-head"),
        html.P(text, className="section-text"),
        dcc.Graph(id=f"fig-{name}", figure=figure or placeholder(height),
                  config=graph_config(name), className="graph"),
    ], className="card figure-card", id=f"section-{name}",
        style={} if shown else {"display": "none"})


def _toggle(cid: str, label: str, on: bool) -> dcc.Checklist:
    return dcc.Checklist(id=cid, value=["on"] if on else [], inline=True,
                         options=[{"label": label, "value": "on"}])


def view_controls(view: ViewState, grouped: bool) -> html.Div:
    """Seed groups, smoothing, the x axis, the figures shown and the page's link."""
    return html.Div([
        html.Div([html.Label("Seeds"), _toggle("cmp-group", "group by seed", grouped),
                  dcc.RadioItems(id="cmp-center", value=view.center, inline=True, options=[
                      {"label": "median", "value": "median"},
                      {"label": "mean", "value": "mean"}]),
                  dcc.RadioItems(id="cmp-band", value=view.band, inline=True, options=[
                      {"label": "min–max", "value": "minmax"},
                      {"label": "± 1 std", "value": "std"}]),
                  _toggle("cmp-single", "single runs", view.single)], className="control"),
        html.Div([html.Label("Smoothing"), dcc.Slider(
            id="cmp-smooth", min=0, max=MAX_SMOOTH, step=0.01, value=view.smooth,
            updatemode="mouseup", marks={0: "0", 0.5: "0.5", 0.9: "0.9"},
            tooltip={"placement": "bottom"}, className="smooth-slider")],
            className="control control-smooth"),
        html.Div([html.Label("x axis"), dcc.Dropdown(
            id="cmp-x", value=view.x, clearable=False, searchable=False,
            options=[{"label": lab, "value": v} for v, lab in X_CHOICES],
            className="x-select"), _toggle("cmp-logx", "log x", view.logx)],
            className="control"),
        html.Div([html.Label("Figures"), dcc.Checklist(
            id="cmp-figs", inline=True,
            value=list(view.figs) if view.figs is not None else [s[0] for s in SECTIONS],
            options=[{"label": title, "value": name} for name, title, *_ in SECTIONS])],
            className="control control-wide"),
        html.Div([html.Button("copy link", id="cmp-copy", className="btn btn-small",
                              title="copy the link to this view"),
                  html.Span(id="cmp-copied", className="muted"),
                  html.Code(id="cmp-link", className="permalink")],
                 className="control control-wide"),
    ], className="controls view-controls card")


def controls(log: list[str], live: str | None, view: ViewState | None = None) -> html.Div:
    view = view or ViewState()
    lo, hi = view.steps or (None, None)
    return html.Div([
        html.Div([html.Label("Bands"), dcc.RadioItems(
            id="cmp-arrange", value=view.arrange, inline=True,
            options=[{"label": "side by side", "value": "side"},
                     {"label": "overlaid", "value": "overlay"}])], className="control"),
        html.Div([html.Label("Log y"), dcc.Checklist(
            id="cmp-log", value=log, inline=True,
            options=[{"label": lab, "value": v} for v, lab in LOG_CHOICES])],
            className="control control-wide"),
        html.Div([html.Label("Steps"),
                  # Text, not number: see compare/steps.py.
                  dcc.Input(id="cmp-from", type="text", inputMode="numeric", placeholder="0",
                            debounce=True, className="step-input", value=lo),
                  html.Span("to"),
                  dcc.Input(id="cmp-to", type="text", inputMode="numeric", placeholder="end",
                            value=hi, debounce=True, className="step-input"),
                  html.Div(step_error(lo, hi), id="cmp-steps-error", className="field-error")],
                 className="control"),
        html.Div(live, id="cmp-live", className="live"),
    ], className="controls card")


def layer_controls(options: list[dict[str, Any]], layer: int = 1,
                   scope: str = "layer") -> html.Div:
    return html.Div([
        dcc.Dropdown(id="cmp-layer", value=layer, clearable=False, searchable=False,
                     options=options, className="layer-select"),
        dcc.RadioItems(id="cmp-scope", value=scope, inline=True,
                       options=[{"label": "whole layer", "value": "layer"},
                                {"label": "sampled unit", "value": "unit"}]),
    ], className="layer-controls")


def compare_layout(source: dict[str, Any], poll_ms: int,
                   initial: dict[tuple[str, str], Any] | None = None,
                   view: ViewState | None = None) -> html.Div:
    """The page. `initial` holds values for its components' properties, keyed (id, property)
    like the drive callback's outputs (webapp/compare/page.py fills it from the first build).
    Without it: empty figures of the final size, for the first callback to fill. `view`: what
    the page's URL asked for (viewstate.py), which the controls show."""
    first = initial or {}
    view = view or ViewState()

    def value(cid: str, prop: str, default: Any = None) -> Any:
        return first.get((cid, prop), default)

    layers = value("cmp-layer", "options", [{"label": "layer 1", "value": 1}])
    layer = view.layer if view.layer in [o["value"] for o in layers] else layers[0]["value"]
    sections = [section(name, title, ref, text, height,
                        layer_controls(layers, layer, view.scope) if name == "dist_heat"
                        else None, value(f"fig-{name}", "figure"),
                        shown=view.figs is None or name in view.figs)
                for name, title, ref, text, height in SECTIONS]
    grouped = value("cmp-group", "value", ["on"] if view.group else []) == ["on"]
    return html.Div([
        # refresh=False: the view's changes rewrite the address (a permalink), never reload.
        dcc.Location(id="cmp-url", refresh=False),
        dcc.Store(id="cmp-source", data=source),
        dcc.Store(id="cmp-state", data=value("cmp-state", "data")),
        dcc.Store(id="cmp-range", data=list(view.range) if view.range else None),
        dcc.Store(id="cmp-export-sink"),
        dcc.Store(id="cmp-csv-request"),
        dcc.Download(id="cmp-download"),
        dcc.Interval(id="cmp-poll", interval=poll_ms,
                     max_intervals=value("cmp-poll", "max_intervals", -1)),
        html.H2(value("cmp-title", "children"), id="cmp-title", className="page-title"),
        html.Div(value("cmp-header", "children"), id="cmp-header", className="run-strip"),
        controls(value("cmp-log", "value", sorted(view.logy if view.logy is not None
                                                  else DEFAULT_LOG)),
                 value("cmp-live", "children"), view),
        view_controls(view, grouped),
        html.Div(value("cmp-notice", "children"), id="cmp-notice", className="notice"),
        html.Div(sections, className="figures"),
    ], className="compare")


def run_strip(runs: list[dict[str, Any]], views: list[RunView], export_url) -> list:
    """A chip per run: its colour and legend name, status, progress, where it runs, CSV."""
    by_id = {r["id"]: r for r in runs}
    chips = []
    for v in views:
        run = by_id.get(v.id)
        if run is None:
            continue
        where = " · ".join(x for x in (run.get("device"), run.get("worker")) if x)
        extra = f"at {run['diverged_at']}" if run.get("diverged_at") is not None else ""
        chips.append(html.Div([
            html.Div([swatch(v.color, v.dash), html.Span(v.label, className="chip-label"),
                      source_badge(run), status_badge(run["status"], extra)],
                     className="chip-top"),
            progress_bar(run),
            html.Div([html.Span(f"#{v.id} {v.name}", className="muted"),
                      html.Span(where, className="muted"),
                      html.A("CSV", href=export_url(v.id), className="csv-link",
                             title="all scalar metrics of this run as CSV")],
                     className="chip-bottom"),
            environment_block(run),  # threads, precision, machine, versions (collapsed)
        ], className="run-chip", style={"borderLeftColor": v.color}))
    return chips
