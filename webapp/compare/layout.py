"""The compare view's page structure: the run strip, the controls, and a section per figure
saying what it shows and which of the paper's figures it reproduces. Shared by the
experiment page and the compare page; only the `source` store differs."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from webapp.components import progress_bar, source_badge, status_badge, swatch
from webapp.environment_view import environment_block
from webapp.figures import DEFAULT_LOG
from webapp.runsets import RunView
from webapp.style import graph_config

# (figure, title, paper reference, what it shows, height)
SECTIONS: list[tuple[str, str, str, str, int]] = [
    ("training", "Training", "Fig 1, 5, 12",
     "Loss and accuracy. Solid: the training minibatch at each step (the light band is the "
     "min-max of each downsampled stretch); dotted: the held-out test set.", 340),
    ("landscape", "Loss landscape along the gradient", "Fig 4a, 10a",
     "At each probed step t, the loss l(η) = L(w_t − η∇L) for every η in S = multipliers × LR; "
     "the band spans its min to max. A narrow band is a smooth landscape.", 340),
    ("gradpred", "Gradient predictiveness", "Fig 4b, 10b",
     "‖∇L(w_t − η∇L) − ∇L(w_t)‖₂ over η ∈ S: how much the gradient changes a step away. "
     "Small means the gradient predicts the next one.", 340),
    ("beta", "Effective β-smoothness", "Fig 4c, 10c",
     "max over η of the gradient change per unit of distance moved: the local Lipschitz "
     "constant of the gradient along the path.", 320),
    ("etas", "Predictiveness against the step size", "Fig 11",
     "d(η) against η, one line per probed step, coloured from early (dark) to late (bright).",
     320),
    ("ics", "Internal covariate shift", "Fig 3, Definition 2.1",
     "G: the gradient of layer i; G′: the same after every earlier layer took this step's "
     "update. BatchNorm does not make ‖G − G′‖ smaller — the paper's point.", 480),
    ("dist_heat", "Activation distributions", "Fig 1c, 2, 6, 9",
     "The share of a layer's activations (after normalisation, before the nonlinearity) in "
     "each bin, over training; outer columns hold what fell outside the histogram range.",
     320),
    ("dist_overlay", "Activation distributions, overlaid", "Fig 2 (overlaid)",
     "Every run's 5–95 % and 25–75 % quantile bands and median on one axis.", 360),
    ("sharpness", "Sharpness", "beyond the paper",
     "Top Hessian eigenvalue on the minibatch against the edge of stability 2/LR.", 320),
    ("dynamics", "Gradient norm and distance travelled", "beyond the paper",
     "‖∇L(w_t)‖₂ and ‖w_t − w_0‖₂.", 300),
]
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
        html.Button(fmt.upper(), id={"type": "cmp-export", "fig": name, "fmt": fmt},
                    className="btn btn-small", title=f"download this figure as {fmt.upper()}")
        for fmt in ("png", "svg")
    ], className="export")


def section(name: str, title: str, ref: str, text: str, height: int,
            extra: Any = None, figure: dict[str, Any] | None = None) -> html.Section:
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
    ], className="card figure-card", id=f"section-{name}")


def controls(log: list[str], live: str | None) -> html.Div:
    return html.Div([
        html.Div([html.Label("Bands"), dcc.RadioItems(
            id="cmp-arrange", value="side", inline=True,
            options=[{"label": "side by side", "value": "side"},
                     {"label": "overlaid", "value": "overlay"}])], className="control"),
        html.Div([html.Label("Log y"), dcc.Checklist(
            id="cmp-log", value=log, inline=True,
            options=[{"label": lab, "value": v} for v, lab in LOG_CHOICES])],
            className="control control-wide"),
        html.Div([html.Label("Steps"),
                  dcc.Input(id="cmp-from", type="number", min=0, placeholder="0", debounce=True,
                            className="step-input"),
                  html.Span("to"),
                  dcc.Input(id="cmp-to", type="number", min=0, placeholder="end",
                            debounce=True, className="step-input")], className="control"),
        html.Div(live, id="cmp-live", className="live"),
    ], className="controls card")


def layer_controls(options: list[dict[str, Any]]) -> html.Div:
    return html.Div([
        dcc.Dropdown(id="cmp-layer", value=1, clearable=False, searchable=False,
                     options=options, className="layer-select"),
        dcc.RadioItems(id="cmp-scope", value="layer", inline=True,
                       options=[{"label": "whole layer", "value": "layer"},
                                {"label": "sampled unit", "value": "unit"}]),
    ], className="layer-controls")


def compare_layout(source: dict[str, Any], poll_ms: int,
                   initial: dict[tuple[str, str], Any] | None = None) -> html.Div:
    """The page. `initial` holds values for its components' properties, keyed (id, property)
    like the drive callback's outputs (webapp/compare/page.py fills it from the first build).
    Without it: empty figures of the final size, for the first callback to fill."""
    first = initial or {}

    def value(cid: str, prop: str, default: Any = None) -> Any:
        return first.get((cid, prop), default)

    layers = value("cmp-layer", "options", [{"label": "layer 1", "value": 1}])
    sections = [section(name, title, ref, text, height,
                        layer_controls(layers) if name == "dist_heat" else None,
                        value(f"fig-{name}", "figure"))
                for name, title, ref, text, height in SECTIONS]
    return html.Div([
        dcc.Store(id="cmp-source", data=source),
        dcc.Store(id="cmp-state", data=value("cmp-state", "data")),
        dcc.Store(id="cmp-export-sink"),
        dcc.Interval(id="cmp-poll", interval=poll_ms,
                     max_intervals=value("cmp-poll", "max_intervals", -1)),
        html.H2(value("cmp-title", "children"), id="cmp-title", className="page-title"),
        html.Div(value("cmp-header", "children"), id="cmp-header", className="run-strip"),
        controls(value("cmp-log", "value", sorted(DEFAULT_LOG)), value("cmp-live", "children")),
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
