"""Tags and a note on a run or an experiment: shown, and edited in place (PATCH through the
API). One editor per object, told apart by a pattern id {"type": ..., "kind": "run" |
"experiment", "id": n}, so the run page and the experiment page share one callback."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from dash import MATCH, Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from webapp.client import ApiClient, ApiError

KINDS = ("run", "experiment")


def parse_tags(text: str | None) -> list[str]:
    """'a, b  c' -> ['a', 'b', 'c']: a tag has no spaces or commas, so either separates."""
    return [t for t in re.split(r"[,\s]+", text or "") if t]


def _id(part: str, kind: str, oid: int) -> dict[str, Any]:
    return {"type": f"ann-{part}", "kind": kind, "id": oid}


def chips(tags: list[str]) -> list:
    if not tags:
        return [html.Span("no tags", className="muted")]
    return [html.Span(t, className="tag-chip") for t in tags]


def editor(kind: str, obj: dict[str, Any]) -> html.Div:
    """The object's tags (chips) and note, with fields to change them and a Save button."""
    oid = obj["id"]
    tags, note = obj.get("tags") or [], obj.get("note")
    return html.Div([
        html.Div([html.Span(f"{kind} #{oid}", className="ann-title"),
                  html.Div(chips(tags), id=_id("chips", kind, oid), className="tag-chips")],
                 className="ann-head"),
        html.Div([
            dcc.Input(id=_id("tags", kind, oid), value=", ".join(tags), debounce=False,
                      placeholder="tags, comma-separated", className="ann-tags"),
            dcc.Textarea(id=_id("note", kind, oid), value=note or "",
                         placeholder=f"a note on this {kind}…", className="ann-note"),
            html.Button("Save", id=_id("save", kind, oid), className="btn btn-small"),
            html.Span(id=_id("msg", kind, oid), className="message"),
        ], className="ann-edit"),
    ], className="annotations card", id=_id("box", kind, oid))


def field_message(exc: ApiError, tags: list[str]) -> str:
    """The API's 422 in the editor's words: which tag, or the note, and why."""
    parts = []
    for loc, msg in exc.field_errors():
        if len(loc) >= 3 and loc[1] == "tags" and isinstance(loc[2], int) and loc[2] < len(tags):
            parts.append(f"tag {tags[loc[2]]!r}: {msg}")
        elif len(loc) >= 2 and loc[1] in ("tags", "note"):
            parts.append(f"{loc[1]}: {msg}")
    return "; ".join(parts) or exc.message


def save(client: ApiClient, kind: str, oid: int, tags_text: str | None, note: str | None,
         token: str | None) -> tuple[Any, str, Any, Any]:
    """PATCH the tags and the note; (chips, message, tags field, note field) as saved."""
    tags = parse_tags(tags_text)
    patch = client.annotate_run if kind == "run" else client.annotate_experiment
    try:
        out = patch(oid, tags=tags, note=note or None, token=token)
    except ApiError as exc:
        msg = field_message(exc, tags) if exc.status == 422 else exc.message
        return no_update, msg, no_update, no_update
    saved = out.get("tags") or []
    return chips(saved), "Saved.", ", ".join(saved), out.get("note") or ""


def section(client: ApiClient, kind: str, oid: int) -> html.Div | None:
    """The editor for one object, fetched now; None when the API cannot say (the page shows
    its own notice for that)."""
    try:
        obj = client.run(oid) if kind == "run" else client.experiment(oid)
    except ApiError:
        return None
    return editor(kind, obj)


def register(app: Dash, client: ApiClient) -> dict[str, Callable]:
    @app.callback(
        Output(_id("chips", MATCH, MATCH), "children"),
        Output(_id("msg", MATCH, MATCH), "children"),
        Output(_id("tags", MATCH, MATCH), "value"),
        Output(_id("note", MATCH, MATCH), "value"),
        Input(_id("save", MATCH, MATCH), "n_clicks"),
        State(_id("save", MATCH, MATCH), "id"),
        State(_id("tags", MATCH, MATCH), "value"),
        State(_id("note", MATCH, MATCH), "value"),
        State("token", "value"),
        prevent_initial_call=True,
    )
    def on_save(n_clicks, ident, tags_text, note, token):
        if not n_clicks or ident.get("kind") not in KINDS:
            raise PreventUpdate
        return save(client, ident["kind"], int(ident["id"]), tags_text, note, token)

    return {"save": on_save}
