"""The Landscape tab's structure: the launch form with its cost, the list of the experiment's
analyses, the view controls (which requests to show, log colour, export format, the step
slider and its play button), and the figures of each shown request, keyed so that one
function (`figure_for`) builds any of them again for another step or colour scale."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go
from dash import dcc, html

from server.analysis_spec import DIRECTIONS_FOR
from webapp.components import status_badge
from webapp.environment_view import analyses_environment_line
from webapp.figures.geometry import eval_samples
from webapp.figures.geometry_spectrum import density_figure, spectrum_over_training
from webapp.figures.geometry_surface import (
    contour_figure,
    slices_figure,
    surface_figure,
    trajectory_figure,
)
from webapp.landscape.data import Group, Loaded
from webapp.landscape.form import (
    DEFAULT_SAMPLES,
    KEEP_1D,
    POINTS,
    SAMPLES,
    TEST_SET,
    default_points,
)
from webapp.landscape.spectrum_table import spectrum_table
from webapp.style import STATUS_COLORS

KIND_OPTIONS = [{"label": "2D surface", "value": "surface"},
                {"label": "1D slice", "value": "slice"},
                {"label": "trajectory on its PCA plane", "value": "trajectory"},
                {"label": "Hessian spectrum", "value": "spectrum"}]
BN_OPTIONS = [{"label": "batch statistics", "value": "batch"},
              {"label": "running statistics (eval)", "value": "running"},
              {"label": "recalibrated", "value": "recalibrated"}]
DIRECTION_LABELS = {"random": "random, filter-normalised", "gradient": "gradient",
                    "hessian": "top Hessian eigenvector(s)", "pca": "trajectory PCA",
                    "interpolation": "interpolation from init"}
# What each request kind draws: (figure name, per run?) in page order.
FIGS_OF = {"surface": [("contour", True), ("surface", True)], "slice": [("slices", False)],
           "trajectory": [("trajectory", True)],
           "spectrum": [("density", False), ("training", False)]}
SURFACE = "ls-surface"  # the 3D figures, whose cameras are kept in step
OTHER = "ls-fig"
CANCEL = "ls-cancel"  # a queued or running analysis's cancel button
DEBOUNCE_S = 0.6  # the pause in typing after which a text field's value is sent


def direction_options(kind: str) -> list[dict[str, str]]:
    if kind == "spectrum":
        return [{"label": "none needed", "value": "random"}]
    return [{"label": DIRECTION_LABELS.get(k, k), "value": k}
            for k in DIRECTIONS_FOR.get(kind, ("random",))]


def _field(label: str, control: Any, hint: str = "", name: str | None = None) -> html.Div:
    """A labelled control with its hint; a `name`d field also gets an error line
    (ls-<name>-error) and an id on its hint (ls-<name>-hint)."""
    hint_box = html.Small(hint, className="muted", **({"id": f"ls-{name}-hint"} if name
                                                       else {})) if hint or name else None
    error = html.Div(id=f"ls-{name}-error", className="field-error") if name else None
    return html.Div([html.Label(label), control, hint_box, error], className="ls-field")


def points_placeholder(kind: str) -> str:
    n = default_points(kind)
    return "no grid" if n is None else str(n)


def points_hint(kind: str) -> str:
    """What an empty Grid points field means for `kind`, said where it is typed."""
    n = default_points(kind)
    if n is None:
        return "unused: a spectrum has no grid"
    return f"{POINTS[0]} to {POINTS[1]}; empty: {n}, the default for this kind"


def _text_input(name: str, value: str | None, placeholder: str) -> dcc.Input:
    # Text, not type="number": a number input sends None for an invalid value, as for an
    # empty one (webapp/landscape/form.py). The debounce is a pause in seconds, so the cost
    # follows typing without waiting for the field to be left.
    return dcc.Input(id=f"ls-{name}", type="text", value=value, placeholder=placeholder,
                     debounce=DEBOUNCE_S, className="ls-input", autoComplete="off",
                     **({"inputMode": "numeric"} if name != "steps" else {}))


def launch_form() -> html.Div:
    return html.Div([
        html.H3("New analysis of every run"),
        html.Div([
            _field("Kind", dcc.Dropdown(id="ls-kind", options=KIND_OPTIONS, value="surface",
                                        clearable=False, searchable=False)),
            _field("Steps", _text_input("steps", None, "last"),
                   "saved snapshot steps, e.g. 0, 400, 800; empty: the last", "steps"),
            _field("Directions", dcc.Dropdown(id="ls-dir", value="random", clearable=False,
                                              searchable=False,
                                              options=direction_options("surface"))),
            _field("Grid points per axis",
                   _text_input("points", str(default_points("surface")),
                               points_placeholder("surface")),
                   points_hint("surface"), "points"),
            _field("BN mode", dcc.RadioItems(id="ls-bn", options=BN_OPTIONS, value="batch")),
            _field("Evaluation samples",
                   _text_input("samples", str(DEFAULT_SAMPLES), f"{DEFAULT_SAMPLES:,}"),
                   f"a seeded subset of the training set, the same for every run; "
                   f"{SAMPLES[0]:,} to {SAMPLES[1]:,}; empty: {DEFAULT_SAMPLES:,}", "samples"),
            _field("Direction seed", _text_input("seed", None, "0"),
                   "every run of the experiment gets the same directions from it; another "
                   "seed, another random pair (a spectrum: other probe vectors). Empty: 0",
                   "seed"),
            _field("Options", dcc.Checklist(id="ls-options", value=[], options=[
                {"label": " also on the test set", "value": TEST_SET},
                {"label": " move biases and norm γ, β too (zeroed by default)",
                 "value": KEEP_1D}])),
        ], className="ls-form-grid"),
        html.Div(id="ls-cost", className="ls-cost"),
        html.Div([html.Button("Launch", id="ls-launch", className="btn btn-primary"),
                  html.Span(id="ls-message", className="message")], className="ls-actions"),
    ], className="card ls-card")


def view_controls() -> html.Div:
    return html.Div([
        _field("Show", dcc.Dropdown(id="ls-groups", multi=True, options=[], value=[],
                                    placeholder="no analyses yet")),
        html.Div([
            dcc.RadioItems(id="ls-metric", value="loss", inline=True, options=[
                {"label": "loss", "value": "loss"}, {"label": "accuracy", "value": "acc"},
                {"label": "test loss", "value": "test_loss"},
                {"label": "test accuracy", "value": "test_acc"}]),
            dcc.Checklist(id="ls-log", options=[{"label": "log₁₀ colour", "value": "log"}],
                          value=[], inline=True),
            html.Label("Export as", className="ls-inline-label"),
            dcc.Dropdown(id="ls-format", value="png", clearable=False, searchable=False,
                         options=[{"label": "PNG", "value": "png"},
                                  {"label": "SVG", "value": "svg"}], className="ls-format"),
        ], className="ls-row"),
        html.Div([
            html.Button("▶ play", id="ls-play", className="btn btn-small", n_clicks=0),
            html.Div(dcc.Slider(id="ls-step", min=0, max=1, step=None, value=None,
                                marks={}, included=False), className="ls-slider"),
        ], id="ls-step-box", className="ls-row", style={"display": "none"}),
    ], className="card ls-card ls-controls")


def landscape_layout(experiment_id: int, poll_ms: int = 2000) -> html.Div:
    return html.Div([
        dcc.Store(id="ls-source", data={"experiment": experiment_id}),
        dcc.Store(id="ls-analyses", data=[]),
        dcc.Store(id="ls-version"),
        dcc.Store(id="ls-camera"),
        dcc.Store(id="ls-plotly"),
        dcc.Store(id="ls-launched", data=0),
        dcc.Store(id="ls-typed"),  # the text fields as Launch found them (READ_TYPED)
        dcc.Interval(id="ls-poll", interval=poll_ms),
        dcc.Interval(id="ls-tick", interval=1200, disabled=True),
        html.Div([launch_form(),
                  html.Div([html.H3("Analyses"), html.Div(id="ls-list")],
                           className="card ls-card")], className="ls-top"),
        html.Div(id="ls-notice", className="notice"),
        view_controls(),
        html.Div(id="ls-figures", className="ls-figures"),
    ], className="landscape")


# -- the list of analyses ---------------------------------------------------------------------

def progress(done: int, total: int, status: str) -> html.Div | str:
    if not total:  # a spectrum: no grid, its values come whole
        return "values only" if status != "succeeded" else "done"
    pct = 100 * done / total
    return html.Div([
        html.Div(className="progress-fill", style={
            "width": f"{pct:.1f}%", "backgroundColor": STATUS_COLORS.get(status, "#888")}),
        html.Span(f"{done:,}/{total:,} points", className="progress-label"),
    ], className="progress", title=f"{pct:.0f}%")


def eval_cell(analysis: dict[str, Any]) -> str:
    """The evaluation set's size in the list: two spectra of one run and step differ when
    their sets do, and this is where a reader sees why."""
    n = eval_samples(analysis)
    if n is not None:
        return f"{n:,} samples"
    return "all" if "eval_samples" in (analysis.get("spec") or {}) else "?"


def analyses_table(groups: list[Group], labels: dict[int, str],
                   csv_url: Callable[[int], str]) -> html.Table | html.P:
    if not groups:
        return html.P("No analyses yet: launch one with the form.", className="muted")
    rows = []
    for g in groups:
        for a in g.analyses:
            p = a.get("progress") or {}
            rows.append(html.Tr([
                html.Td(f"#{g.id}"), html.Td(a["kind"]),
                html.Td(labels.get(a["run_id"], f"run {a['run_id']}")),
                html.Td(a.get("bn_mode")), html.Td(eval_cell(a)),
                html.Td(", ".join(map(str, (a.get("spec") or {}).get("steps") or [])) or "last"),
                html.Td(status_badge(a["status"]), title=a.get("error") or ""),
                html.Td(progress(int(p.get("done") or 0), int(p.get("total") or 0),
                                 a["status"])),
                html.Td(html.A("CSV", href=csv_url(a["id"]), className="csv-link")
                        if a["kind"] != "spectrum" else ""),
                html.Td(html.Button("Cancel", id={"type": CANCEL, "id": a["id"]},
                                    className="btn btn-small")
                        if a["status"] in ("queued", "running") else ""),
            ], id=f"ls-analysis-{a['id']}"))
    head = html.Tr([html.Th(h) for h in ("group", "kind", "run", "BN mode", "eval set",
                                         "steps", "status", "progress", "", "")])
    return html.Table([html.Thead(head), html.Tbody(rows)], className="ls-table")


# -- the figures ------------------------------------------------------------------------------

def key_of(group_id: int, fig: str, run_id: int | None) -> str:
    return f"{group_id}|{fig}|{'all' if run_id is None else run_id}"


def parse_key(key: str) -> tuple[int, str, int | None]:
    gid, fig, rid = key.split("|")
    return int(gid), fig, None if rid == "all" else int(rid)


def figure_for(key: str, loaded: Loaded, step: int | None, log: bool,
               camera: dict[str, Any] | None, metric: str = "loss") -> go.Figure:
    """Any figure of the tab, from its key: the same function draws the page and redraws a
    figure for another step, colour scale or measured quantity (the trajectory and the
    spectra are of the loss)."""
    gid, fig, rid = parse_key(key)
    items = loaded.items(gid)
    if fig == "slices":
        return slices_figure(items, step, log=log, metric=metric)
    if fig == "density":
        return density_figure(items, step)
    if fig == "training":
        return spectrum_over_training(items)
    run, analysis = next((v, d) for v, d in items if v.id == rid)
    if fig == "trajectory":
        return trajectory_figure(analysis, run, loaded.zrange(gid, log), log=log)
    zrange = loaded.zrange(gid, log, metric)
    if fig == "contour":
        return contour_figure(analysis, run, step, zrange, log=log, metric=metric)
    if fig == "surface":
        return surface_figure(analysis, run, step, zrange, log=log, metric=metric,
                              camera=camera)
    raise ValueError(f"no landscape figure {fig!r}")


def graph_config(name: str, fmt: str, three_d: bool = False) -> dict[str, Any]:
    """The modebar's camera button saves this figure as PNG (2x) or SVG, as chosen."""
    out: dict[str, Any] = {
        "displaylogo": False,
        "toImageButtonOptions": {"format": fmt, "filename": f"landscope-{name}",
                                 "scale": 2 if fmt == "png" else 1},
    }
    if not three_d:
        out["modeBarButtonsToRemove"] = ["lasso2d", "select2d"]
    return out


def graph(key: str, figure: go.Figure, fmt: str) -> dcc.Graph:
    gid, fig, rid = parse_key(key)
    name = f"{fig}-g{gid}" + (f"-run{rid}" if rid is not None else "")
    three_d = fig == "surface"
    return dcc.Graph(id={"type": SURFACE if three_d else OTHER, "key": key}, figure=figure,
                     config=graph_config(name, fmt, three_d), className="ls-graph")


def sections(loaded: Loaded, group_ids: list[int], step: int | None, log: bool, fmt: str,
             camera: dict[str, Any] | None, csv_url: Callable[[int], str],
             metric: str = "loss") -> list:
    """A card per shown request: its figures side by side per run, CSV links per grid."""
    out = []
    for gid in group_ids:
        g = loaded.groups.get(gid)
        if g is None:
            continue
        items = loaded.items(gid)
        links = [html.A(f"CSV {v.label}", href=csv_url(d["id"]), className="csv-link")
                 for v, d in items if g.kind != "spectrum"]
        body = []
        for fig, per_run in FIGS_OF.get(g.kind, []):
            if not per_run:
                body.append(graph(key_of(gid, fig, None),
                                  figure_for(key_of(gid, fig, None), loaded, step, log,
                                             camera, metric), fmt))
        if g.kind == "surface":
            for v, _d in items:
                body.append(html.Div([
                    graph(key, figure_for(key, loaded, step, log, camera, metric), fmt)
                    for key in (key_of(gid, "contour", v.id), key_of(gid, "surface", v.id))
                ], className="ls-pair"))
        elif g.kind == "spectrum":
            table = spectrum_table(items, step)
            if table is not None:
                body.append(table)
        elif g.kind == "trajectory":
            body.append(html.Div([
                graph(key_of(gid, "trajectory", v.id),
                      figure_for(key_of(gid, "trajectory", v.id), loaded, step, log, camera,
                                 metric),
                      fmt) for v, _d in items], className="ls-pair"))
        # Not a "figure-card": that class hides the figures' own titles on the page (the
        # compare view's cards head each figure with the same words), and here the titles
        # are what tell the runs, the step, the BN mode and the evaluation set apart.
        out.append(html.Section([
            html.Div([html.H3(g.label()), html.Div(links, className="ls-links")],
                     className="section-head"),
            analyses_environment_line([d for _v, d in items]),
            *body,
        ], className="card ls-section", id=f"ls-group-{gid}"))
    return out
