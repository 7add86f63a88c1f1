"""/reproduction: the paper's figures, one card each, judged from the newest `repro: ...`
experiments (`landscope reproduce` submits them): the paper's values and ours, the verdict,
why it differs, the protocol choices and our plots. A scale switch (quick, cpu, paper) when
several were run, and a seed switch: each configuration's seeds as their median with a
min-max band, or each seed's run. It refreshes while runs train and stops once every run has
finished."""

from __future__ import annotations

from collections.abc import Callable

import dash
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from server import reproduction as R
from webapp import reproduction_data as data
from webapp import reproduction_view as view
from webapp.client import ApiClient, ApiError

PATH = "/reproduction"
# Each tick re-reads every unfinished run and redraws its figures: slower than the compare
# view's live points, which only append. Verdicts change when runs finish, not every second.
REFRESH_MS = 5000
# Each configuration runs in several seeds: by default its seeds' median with a min-max band.
SEED_OPTIONS = [{"label": "median and range", "value": "groups"},
                {"label": "each seed", "value": "runs"}]


def layout(poll_ms: int = REFRESH_MS, **_query) -> html.Div:
    return html.Div([
        dcc.Store(id="repro-changed"),
        dcc.Interval(id="repro-poll", interval=poll_ms, max_intervals=-1),
        html.Div([
            html.H2("Reproduction of Santurkar et al. 2018", className="page-title"),
            html.Div([html.Label("Scale"), dcc.RadioItems(
                id="repro-scale", inline=True, value=None,
                options=[{"label": s, "value": s, "disabled": True} for s in R.SCALES])],
                className="control"),
            html.Div([html.Label("Seeds"), dcc.RadioItems(
                id="repro-seeds", inline=True, value="groups", options=SEED_OPTIONS)],
                className="control"),
        ], className="page-head"),
        html.P("“How Does Batch Normalization Help Optimization?” (NeurIPS 2018). Per figure: "
               "the paper's value and ours for each claim, the verdict, why it differs, the "
               "protocol choices made where the paper is silent, and our plots, from the "
               "newest reproduction experiments of the chosen scale.", className="section-text"),
        html.Div(id="repro-summary"),
        html.Div(id="repro-notice", className="notice"),
        html.Div(id="repro-message", className="message"),
        html.Div(id="repro-figures", className="figures"),
    ], className="repro-page")


def refresh_outputs(client: ApiClient, scale: str | None, prefix: str,
                    seeds: str | None = "groups") -> tuple:
    """(figures, summary, scale options, scale value, poll max_intervals, notice); `seeds`:
    "groups" draws each configuration's seeds as one line and band, "runs" every run."""
    by_scale = data.latest(data.all_experiments(client))
    options = [{"label": s, "value": s, "disabled": s not in by_scale} for s in R.SCALES]
    if not by_scale:
        # Keep polling: a `landscope reproduce` started elsewhere shows up by itself.
        empty = view.empty_state(len(R.experiments_for("quick")))
        return [empty], None, options, None, -1, ""
    chosen = scale if scale in by_scale else data.default_scale(by_scale)
    loaded = data.load(client, chosen, by_scale[chosen],
                       seeds="runs" if seeds == "runs" else "groups")
    sections, line = view.content(loaded, prefix)
    return sections, line, options, chosen, 0 if loaded.finished else -1, ""


def submit_quick(client: ApiClient, token: str | None) -> str:
    """What `landscope reproduce --quick --no-wait` does, from the page."""
    made = []
    try:
        for exp in R.experiments_for("quick"):
            made.append(client.create_experiment(exp.plans["quick"].body(exp.name("quick")),
                                                 token=token or None))
    except ApiError as exc:
        hint = " (enter the API token in the header)" if exc.status == 401 else ""
        return f"Submitted {len(made)} experiment(s), then: {exc.message}{hint}"
    runs = sum(len(e["runs"]) for e in made)
    return f"Submitted {len(made)} experiments ({runs} runs); a worker trains them in turn."


def register(app: Dash, client: ApiClient, poll_ms: int) -> dict[str, Callable]:
    """Route and callbacks; returns the callback functions (tests call them directly)."""
    interval = max(poll_ms, REFRESH_MS)
    dash.register_page(__name__, path=PATH, name="Reproduction",
                       title="Landscope · reproduction", order=2,
                       layout=lambda **q: layout(interval, **q))
    prefix = app.config.requests_pathname_prefix

    @app.callback(
        Output("repro-figures", "children"), Output("repro-summary", "children"),
        Output("repro-scale", "options"), Output("repro-scale", "value"),
        Output("repro-poll", "max_intervals"), Output("repro-notice", "children"),
        Input("repro-poll", "n_intervals"), Input("repro-scale", "value"),
        Input("repro-changed", "data"), Input("repro-seeds", "value"),
        # A slow load is never superseded by the next tick (Dash would drop its result).
        running=[(Output("repro-poll", "disabled"), True, False)],
    )
    def refresh(_tick, scale, _changed, seeds="groups"):
        try:
            return refresh_outputs(client, scale, prefix, seeds)
        except ApiError as exc:  # say so and try again at the next tick
            return (no_update, no_update, no_update, no_update, -1,
                    f"Could not load the reproduction from the API: {exc.message}")

    @app.callback(Output("repro-message", "children"), Output("repro-changed", "data"),
                  Input("repro-submit", "n_clicks"), State("token", "value"),
                  prevent_initial_call=True)
    def submit(n_clicks, token):
        if not n_clicks:
            raise PreventUpdate
        # The click count, not the message: the same message twice would not re-trigger.
        return submit_quick(client, token), n_clicks

    return {"refresh": refresh, "submit": submit}
