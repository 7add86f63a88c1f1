"""Deleting an experiment from its page: a button, a confirmation naming what goes, and
DELETE /experiments/{id} (its runs, their metrics, snapshots and analyses). The server refuses
while a run is queued or running; the message says which, and nothing is deleted. Done, the
page goes back to the runs list."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from webapp.client import ApiClient, ApiError


def section(experiment_id: int, runs: int) -> html.Div:
    what = f"its {runs} run{'s' if runs != 1 else ''}" if runs else "it"
    return html.Div([
        dcc.Store(id="exp-delete-id", data=experiment_id),
        dcc.ConfirmDialog(id="exp-confirm-delete",
                          message=f"Delete experiment {experiment_id} with {what}, their "
                                  "metrics, snapshots and analyses? This cannot be undone."),
        html.Button("Delete experiment", id="exp-delete", className="btn btn-danger"),
        html.Span(id="exp-delete-message", className="message"),
    ], className="exp-actions")


def delete(client: ApiClient, experiment_id: int, token: str | None,
           prefix: str) -> tuple[str, Any]:
    """(message, where to go): the runs list once deleted, else stay and say why."""
    try:
        client.delete_experiment(experiment_id, token=token)
    except ApiError as exc:
        return f"Not deleted: {exc.message}", no_update
    return f"Deleted experiment {experiment_id}.", prefix


def register(app: Dash, client: ApiClient) -> dict:
    prefix = app.config.requests_pathname_prefix

    @app.callback(Output("exp-confirm-delete", "displayed"),
                  Input("exp-delete", "n_clicks"), prevent_initial_call=True)
    def confirm(_n):
        return True

    @app.callback(Output("exp-delete-message", "children"),
                  Output("nav", "href", allow_duplicate=True),
                  Input("exp-confirm-delete", "submit_n_clicks"),
                  State("exp-delete-id", "data"), State("token", "value"),
                  prevent_initial_call=True)
    def submit(n, experiment_id, token):
        if not n or experiment_id is None:
            raise PreventUpdate
        return delete(client, int(experiment_id), token, prefix)

    return {"confirm": confirm, "submit": submit}
