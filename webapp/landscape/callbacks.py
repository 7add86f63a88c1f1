"""The Landscape tab's Dash wiring: thin adapters over plain functions that tests call
directly (as the compare view's are).

- the form: its direction choices follow the kind; the cost comes from a dry run of
  POST /analyses at every change; Launch posts it for every run of the experiment;
- the list: polled while an analysis is queued or running (the Interval lives in the tab,
  so nothing is polled while another tab is shown);
- the figures: drawn whole when the shown requests change or new points arrive, redrawn in
  place when the step or the colour scale changes; the 3D cameras follow whichever surface
  the reader turns (relayoutData -> every other surface's scene.camera);
- plotly.js: the dashboard ships the cartesian bundle (webapp/assets), which has no 3D
  surfaces; the tab loads Dash's full bundle of the same version before it draws. That load
  (a clientside callback on the tab, `ls-plotly`) is what starts every server callback of the
  tab: while the Runs tab is shown, the Landscape tab asks the server for nothing.
"""

from __future__ import annotations

import re
from typing import Any

from dash import ALL, Dash, Input, Output, Patch, State, ctx, html, no_update

from server.analysis_spec import DIRECTIONS_FOR
from webapp.client import ApiClient, ApiError
from webapp.landscape import data
from webapp.landscape.data import groups_of
from webapp.landscape.layout import (
    CANCEL,
    OTHER,
    SURFACE,
    analyses_table,
    direction_options,
    figure_for,
    sections,
)

FORM = ["ls-kind", "ls-steps", "ls-dir", "ls-points", "ls-bn", "ls-samples"]

# Load Dash's full plotly.js bundle (same version as the cartesian one) once, then say so.
LOAD_FULL_PLOTLY = """function(tab) {
    if (tab !== 'landscape') { return window.dash_clientside.no_update; }
    if (window.landscopeFullPlotly) { return 'full'; }
    if (!window.landscopeLoadingPlotly) {
        window.landscopeLoadingPlotly = true;
        var s = document.createElement('script');
        s.src = window._dashPlotlyJSURL;
        s.onload = function() {
            window.landscopeFullPlotly = true;
            window.dash_clientside.set_props('ls-plotly', {data: 'full'});
        };
        document.head.appendChild(s);
    }
    return window.dash_clientside.no_update;
}"""


# -- the form ---------------------------------------------------------------------------------

def directions_for(kind: str) -> tuple[list[dict[str, str]], str]:
    return direction_options(kind), DIRECTIONS_FOR.get(kind, ("random",))[0]


def parse_steps(text: str | None) -> list[int] | None:
    """'0, 400 800' -> [0, 400, 800]; empty -> None (the last saved step)."""
    parts = [p for p in re.split(r"[,\s;]+", (text or "").strip()) if p]
    if not parts:
        return None
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError("steps: whole numbers separated by commas")
    return sorted({int(p) for p in parts})


def spec_of(kind: str, steps: str | None, direction: str | None, points: Any,
            bn: str | None, samples: Any) -> dict[str, Any]:
    """The AnalysisSpec JSON the form describes (the server validates it)."""
    spec: dict[str, Any] = {"kind": kind or "surface", "bn_mode": bn or "batch",
                            "steps": parse_steps(steps)}
    if spec["kind"] != "spectrum":
        spec["directions"] = {"kind": direction or "random"}
        if points not in (None, ""):
            axis = {"points": int(points)}
            if direction == "interpolation":
                axis.update(lo=-0.5, hi=1.5)
            spec["x"] = axis
            if spec["kind"] in ("surface", "trajectory"):
                spec["y"] = dict(axis)
    if samples not in (None, ""):
        spec["eval_samples"] = int(samples)
    return spec


def cost_view(cost: dict[str, Any]) -> html.Div:
    """The dry run's cost, in the units the issue states it: passes over the eval set."""
    def n(key: str) -> str:
        v = cost.get(key)
        return f"{v:,.0f}" if isinstance(v, int | float) else "?"

    rows = [("analyses (one per run)", n("analyses")), ("grid points", n("points")),
            ("forward passes", f"{n('forward_passes')} of {n('eval_samples')} samples"),
            ("backward passes", n("backward_passes")),
            ("Hessian-vector products", n("hvps")),
            ("forward-pass equivalents", n("forward_equivalents")),
            ("memory (largest)", f"{n('memory_mb')} MiB")]
    return html.Div([html.Strong("Cost"), html.Table(
        [html.Tr([html.Td(k), html.Td(v)]) for k, v in rows], className="cost-table")])


def preview(client: ApiClient, experiment_id: int, *form: Any, token: str | None = None
            ) -> Any:
    try:
        spec = spec_of(*form)
        body = client.create_analyses({"experiment_id": experiment_id, "spec": spec,
                                       "dry_run": True}, token=token)
    except ValueError as exc:
        return html.Span(str(exc), className="error")
    except ApiError as exc:
        return html.Span(exc.message, className="error")
    return cost_view(body.get("cost") or {})


def launch(client: ApiClient, experiment_id: int, launched: int, *form: Any,
           token: str | None = None) -> tuple[Any, int]:
    """(message, the new launch count): a count that changes makes the list refresh."""
    try:
        body = client.create_analyses({"experiment_id": experiment_id,
                                       "spec": spec_of(*form), "dry_run": False}, token=token)
    except (ValueError, ApiError) as exc:
        return html.Span(getattr(exc, "message", str(exc)), className="error"), no_update
    made = body.get("analyses") or []
    ids = ", ".join(f"#{a['id']}" for a in made)
    return f"Launched {len(made)} analyses ({ids}).", (launched or 0) + 1


def cancel(client: ApiClient, analysis_id: Any, launched: int, token: str | None = None
           ) -> tuple[Any, int]:
    """(message, the new launch count) after asking the server to cancel one analysis."""
    try:
        client.cancel_analysis(int(analysis_id), token=token)
    except (TypeError, ValueError):
        return html.Span(f"not an analysis: {analysis_id!r}", className="error"), no_update
    except ApiError as exc:
        return html.Span(exc.message, className="error"), no_update
    return f"Cancelled analysis #{int(analysis_id)}.", (launched or 0) + 1


# -- the list ---------------------------------------------------------------------------------

def refresh(client: ApiClient, experiment_id: int, selected: list[int] | None,
            version: str | None, reselect: bool = False) -> tuple:
    """(list, group options, selection, summaries, poll disabled, notice, version)."""
    try:
        summaries = data.load_analyses(client, experiment_id)
        views = data.load_runs(client, experiment_id)
    except ApiError as exc:
        return (no_update, no_update, no_update, no_update, False,
                f"Could not load analyses: {exc.message}", no_update)
    groups = groups_of(summaries)
    labels = {v.id: v.label for v in views}
    options = [{"label": g.label(), "value": g.id} for g in groups]
    have = {g.id for g in groups}
    keep = [gid for gid in (selected or []) if gid in have]
    chosen = data.default_selection(groups) if reselect or not keep else keep
    new_version = data.fingerprint(summaries, chosen)
    return (analyses_table(groups, labels, client.analysis_csv_url), options,
            chosen if chosen != (selected or []) else no_update, summaries,
            not any(g.active for g in groups), "",
            new_version if new_version != version else no_update)


# -- the figures ------------------------------------------------------------------------------

def step_marks(steps: list[int]) -> dict[str, str]:
    return {str(s): f"{s:,}" for s in steps}


def draw(client: ApiClient, experiment_id: int, group_ids: list[int] | None,
         step: int | None, log: list[str] | None, fmt: str | None,
         camera: dict[str, Any] | None, summaries: list[dict[str, Any]] | None,
         metric: str | None = "loss") -> tuple:
    """(figure area, slider box style, marks, min, max, slider value)."""
    group_ids = group_ids or []
    try:
        loaded = data.load(client, experiment_id, group_ids, summaries or None)
    except ApiError as exc:
        return (html.P(f"Could not load analyses: {exc.message}", className="notice"),
                no_update, no_update, no_update, no_update, no_update)
    steps = loaded.steps(group_ids)
    at = step if step in steps else (steps[-1] if steps else None)
    children = sections(loaded, group_ids, at, "log" in (log or []), fmt or "png", camera,
                        client.analysis_csv_url, metric or "loss")
    box = {"display": "flex"} if len(steps) > 1 else {"display": "none"}
    lo, hi = (steps[0], steps[-1]) if steps else (0, 1)
    return (children, box, step_marks(steps), lo, hi, at if at != step else no_update)


def restep(client: ApiClient, experiment_id: int, group_ids: list[int] | None,
           step: int | None, log: list[str] | None, camera: dict[str, Any] | None,
           summaries: list[dict[str, Any]] | None, fig_keys: list[str],
           surface_keys: list[str], metric: str | None = "loss") -> tuple[list, list]:
    """Every figure on the page again, for another step, colour scale or quantity."""
    ids = [int(k.split("|")[0]) for k in [*fig_keys, *surface_keys]]
    wanted = sorted(set(ids) | set(group_ids or []))
    loaded = data.load(client, experiment_id, wanted, summaries or None)
    is_log, metric = "log" in (log or []), metric or "loss"
    return ([figure_for(k, loaded, step, is_log, camera, metric) for k in fig_keys],
            [figure_for(k, loaded, step, is_log, camera, metric) for k in surface_keys])


def camera_of(relayout: dict[str, Any] | None) -> dict[str, Any] | None:
    """The 3D camera a reader's drag set: relayoutData holds it whole ("scene.camera") or
    in parts ("scene.camera.eye")."""
    if not relayout:
        return None
    if isinstance(relayout.get("scene.camera"), dict):
        return relayout["scene.camera"]
    parts = {k.split(".", 2)[2]: v for k, v in relayout.items()
             if k.startswith("scene.camera.") and isinstance(v, dict)}
    return parts or None


def sync_cameras(relayouts: list[dict[str, Any] | None], keys: list[str],
                 trigger: str | None, last: dict[str, Any] | None) -> tuple[list, Any]:
    """(one output per surface, the shared camera): every surface but the one turned gets
    its camera as a Patch; nothing when the camera did not change (our own patches)."""
    if trigger not in keys:
        return [no_update] * len(keys), no_update
    camera = camera_of(relayouts[keys.index(trigger)])
    if camera is None or camera == last:
        return [no_update] * len(keys), no_update
    outs: list[Any] = []
    for k in keys:
        if k == trigger:
            outs.append(no_update)
            continue
        p = Patch()
        p["layout"]["scene"]["camera"] = camera
        outs.append(p)
    return outs, camera


def next_step(marks: dict[str, Any] | None, current: int | None) -> int | Any:
    steps = sorted(int(s) for s in (marks or {}))
    if not steps:
        return no_update
    later = [s for s in steps if current is None or s > current]
    return later[0] if later else steps[0]


def toggle_play(n_clicks: int | None) -> tuple[bool, str]:
    """(tick disabled, button label): odd clicks play, even ones pause."""
    playing = bool(n_clicks) and n_clicks % 2 == 1
    return not playing, "❚❚ pause" if playing else "▶ play"


def _exp(source: dict[str, Any] | None) -> int:
    return int((source or {})["experiment"])


def register(app: Dash, client: ApiClient) -> dict:
    """The callbacks; returns the server ones by name (tests call them directly)."""
    app.clientside_callback(LOAD_FULL_PLOTLY, Output("ls-plotly", "data"),
                            Input("exp-tab", "value"))

    @app.callback(Output("ls-dir", "options"), Output("ls-dir", "value"),
                  Input("ls-kind", "value"), prevent_initial_call=True)
    def cb_directions(kind):
        return directions_for(kind)

    @app.callback(Output("ls-cost", "children"), Input("ls-plotly", "data"),
                  *[Input(f, "value") for f in FORM], State("ls-source", "data"),
                  State("token", "value"), prevent_initial_call=True)
    def cb_preview(shown, *args):
        *form, source, token = args
        if shown != "full":
            return no_update
        return preview(client, _exp(source), *form, token=token)

    @app.callback(Output("ls-message", "children"), Output("ls-launched", "data"),
                  Output("ls-poll", "disabled", allow_duplicate=True),
                  Input("ls-launch", "n_clicks"), *[State(f, "value") for f in FORM],
                  State("ls-source", "data"), State("ls-launched", "data"),
                  State("token", "value"), prevent_initial_call=True)
    def cb_launch(_n, *args):
        *form, source, launched, token = args
        message, count = launch(client, _exp(source), launched, *form, token=token)
        return message, count, False

    @app.callback(Output("ls-message", "children", allow_duplicate=True),
                  Output("ls-launched", "data", allow_duplicate=True),
                  Input({"type": CANCEL, "id": ALL}, "n_clicks"),
                  State("ls-launched", "data"), State("token", "value"),
                  prevent_initial_call=True)
    def cb_cancel(clicks, launched, token):
        hit = ctx.triggered_id
        if not isinstance(hit, dict) or not any(clicks or []):
            return no_update, no_update  # the list was redrawn, nothing was clicked
        return cancel(client, hit.get("id"), launched, token)

    @app.callback(Output("ls-list", "children"), Output("ls-groups", "options"),
                  Output("ls-groups", "value"), Output("ls-analyses", "data"),
                  Output("ls-poll", "disabled"), Output("ls-notice", "children"),
                  Output("ls-version", "data"),
                  Input("ls-plotly", "data"), Input("ls-poll", "n_intervals"),
                  Input("ls-launched", "data"), State("ls-source", "data"),
                  State("ls-groups", "value"), State("ls-version", "data"),
                  prevent_initial_call=True)
    def cb_refresh(shown, _tick, _launched, source, selected, version):
        if shown != "full":
            return (no_update,) * 7
        return refresh(client, _exp(source), selected, version,
                       reselect=ctx.triggered_id == "ls-launched")

    @app.callback(Output("ls-figures", "children"), Output("ls-step-box", "style"),
                  Output("ls-step", "marks"), Output("ls-step", "min"),
                  Output("ls-step", "max"), Output("ls-step", "value"),
                  Input("ls-groups", "value"), Input("ls-format", "value"),
                  Input("ls-plotly", "data"), Input("ls-version", "data"),
                  State("ls-source", "data"), State("ls-step", "value"),
                  State("ls-log", "value"), State("ls-camera", "data"),
                  State("ls-analyses", "data"), State("ls-metric", "value"),
                  prevent_initial_call=True)
    def cb_draw(groups, fmt, plotly, _version, source, step, log, camera, summaries, metric):
        if plotly != "full":  # 3D surfaces need the full plotly.js bundle
            return (no_update,) * 6
        return draw(client, _exp(source), groups, step, log, fmt, camera, summaries, metric)

    @app.callback(Output({"type": OTHER, "key": ALL}, "figure"),
                  Output({"type": SURFACE, "key": ALL}, "figure"),
                  Input("ls-step", "value"), Input("ls-log", "value"),
                  Input("ls-metric", "value"),
                  State("ls-source", "data"), State("ls-groups", "value"),
                  State("ls-camera", "data"), State("ls-analyses", "data"),
                  prevent_initial_call=True)
    def cb_restep(step, log, metric, source, groups, camera, summaries):
        fig_keys = [o["id"]["key"] for o in ctx.outputs_list[0]]
        surface_keys = [o["id"]["key"] for o in ctx.outputs_list[1]]
        return restep(client, _exp(source), groups, step, log, camera, summaries, fig_keys,
                      surface_keys, metric)

    @app.callback(Output({"type": SURFACE, "key": ALL}, "figure", allow_duplicate=True),
                  Output("ls-camera", "data"),
                  Input({"type": SURFACE, "key": ALL}, "relayoutData"),
                  State("ls-camera", "data"), prevent_initial_call=True)
    def cb_cameras(relayouts, last):
        keys = [o["id"]["key"] for o in ctx.inputs_list[0]]
        trigger = ctx.triggered_id["key"] if isinstance(ctx.triggered_id, dict) else None
        return sync_cameras(relayouts, keys, trigger, last)

    @app.callback(Output("ls-tick", "disabled"), Output("ls-play", "children"),
                  Input("ls-play", "n_clicks"), prevent_initial_call=True)
    def cb_play(n):
        return toggle_play(n)

    @app.callback(Output("ls-step", "value", allow_duplicate=True),
                  Input("ls-tick", "n_intervals"), State("ls-step", "marks"),
                  State("ls-step", "value"), prevent_initial_call=True)
    def cb_tick(_n, marks, step):
        return next_step(marks, step)

    return {"directions": cb_directions, "preview": cb_preview, "launch": cb_launch,
            "refresh": cb_refresh, "draw": cb_draw, "restep": cb_restep,
            "cameras": cb_cameras, "play": cb_play, "tick": cb_tick}
