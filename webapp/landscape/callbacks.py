"""The Landscape tab's Dash wiring: thin adapters over plain functions that tests call
directly (as the compare view's are).

- the form (webapp/landscape/form.py reads it): its direction choices and grid hint follow
  the kind; a field that cannot be used gets its error line and the cost panel says it cannot
  cost the analysis; otherwise the cost comes from a dry run of POST /analyses, after a short
  pause in typing (DEBOUNCE_S) as well as on leaving a field. Launch reads the text fields
  from the page itself (READ_TYPED) when it is clicked, so it never goes by a value still
  waiting out its pause, and posts the spec for every run of the experiment;
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

from typing import Any

from dash import ALL, Dash, Input, Output, Patch, State, ctx, html, no_update

from webapp.client import ApiClient, ApiError
from webapp.landscape import data
from webapp.landscape.data import groups_of
from webapp.landscape.form import OWN_LINE
from webapp.landscape.launch import (
    READ_TYPED,
    directions_for,
    launch,
    points_field,
    preview,
    typed_form,
)
from webapp.landscape.layout import (
    CANCEL,
    OTHER,
    SURFACE,
    analyses_table,
    figure_for,
    sections,
)

FORM = ["ls-kind", "ls-steps", "ls-dir", "ls-points", "ls-bn", "ls-samples", "ls-options",
        "ls-seed"]

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


# -- the form (its plain functions: webapp/landscape/launch.py) ------------------------------

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
                  Output("ls-points", "placeholder"), Output("ls-points", "disabled"),
                  Output("ls-points-hint", "children"),
                  Input("ls-kind", "value"), prevent_initial_call=True)
    def cb_directions(kind):
        return (*directions_for(kind), *points_field(kind))

    errors_out = [Output(f"ls-{f}-error", "children") for f in OWN_LINE]

    @app.callback(Output("ls-cost", "children"), *errors_out, Input("ls-plotly", "data"),
                  *[Input(f, "value") for f in FORM], State("ls-source", "data"),
                  State("token", "value"), prevent_initial_call=True)
    def cb_preview(shown, *args):
        *form, source, token = args
        if shown != "full":
            return (no_update,) * (1 + len(OWN_LINE))
        cost, lines = preview(client, _exp(source), *form, token=token)
        return cost, *lines

    app.clientside_callback(READ_TYPED, Output("ls-typed", "data"),
                            Input("ls-launch", "n_clicks"), prevent_initial_call=True)

    @app.callback(Output("ls-message", "children"), Output("ls-launched", "data"),
                  Output("ls-poll", "disabled", allow_duplicate=True),
                  *[Output(f"ls-{f}-error", "children", allow_duplicate=True)
                    for f in OWN_LINE],
                  Input("ls-typed", "data"), State("ls-kind", "value"),
                  State("ls-dir", "value"), State("ls-bn", "value"),
                  State("ls-options", "value"),
                  State("ls-source", "data"), State("ls-launched", "data"),
                  State("token", "value"), prevent_initial_call=True)
    def cb_launch(typed, kind, direction, bn, options, source, launched, token):
        form = typed_form(typed, kind, direction, bn, options)
        message, count, lines = launch(client, _exp(source), launched, *form, token=token)
        return message, count, False, *lines

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
