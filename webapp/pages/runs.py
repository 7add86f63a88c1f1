"""/ (Runs): every run with its status, progress, time left, device and worker, tags and note;
filters (status, normalisation, model, dataset, experiment, tags: the API filters, in SQL);
cancel, delete, export, and a selection to compare. It refreshes itself every two seconds.
The filters open from the URL too (/?norm=batch&tag=baseline), so a filtered list is a link."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import dash
from dash import Dash, Input, Output, State, dash_table, dcc, html, no_update
from dash.exceptions import PreventUpdate

from server.spec import NORMS, DatasetName, ModelName
from webapp.annotations import parse_tags
from webapp.client import ApiClient, ApiError
from webapp.components import fmt_duration, step_text
from webapp.style import FINISHED, FONT, SDK_COLOR, STATUS_COLORS, norm_color, norm_label

PATH = "/"
REFRESH_MS = 2000
NOTE_CHARS = 60
MODELS: tuple[str, ...] = ModelName.__args__  # type: ignore[attr-defined]
DATASETS: tuple[str, ...] = DatasetName.__args__  # type: ignore[attr-defined]
# The filters, in the order of the toolbar and of the refresh callback's inputs after the
# original four; each is also a URL query parameter of the page.
FILTERS = ("norm", "model", "dataset", "experiment", "tag")
COLUMNS = [
    {"id": "id", "name": "#"},
    {"id": "name", "name": "run", "presentation": "markdown"},
    {"id": "source", "name": "source"},
    {"id": "norm", "name": "normalisation"},
    {"id": "experiment", "name": "experiment", "presentation": "markdown"},
    {"id": "status", "name": "status"},
    {"id": "progress", "name": "progress"},
    {"id": "eta", "name": "time left"},
    {"id": "device", "name": "device"},
    {"id": "worker", "name": "worker"},
    {"id": "last_loss", "name": "last loss"},
    {"id": "tags", "name": "tags"},
    {"id": "note", "name": "note"},
    {"id": "created", "name": "created"},
    {"id": "csv", "name": "export", "presentation": "markdown"},
]


# Each column's (least, widest) width in px: past the widest its text wraps (at spaces and
# hyphens), so long free text (a note, tags, a queued run's status) does not take the width of
# its longest cell; the least keeps a date, a run name or a worker on one or two tidy lines.
# Together the table fits a 1400 px window, the CSV link included (tests/webapp/
# test_e2e_runs_table.py).
COLUMN_WIDTHS = {"name": (140, 190), "norm": (105, 125), "status": (90, 130),
                 "progress": (95, 110), "worker": (90, 130), "tags": (80, 120),
                 "note": (80, 180), "created": (95, 95)}
# Text a user writes, which may hold no space or hyphen to wrap at: it may break anywhere
# rather than widen its column past the window.
FREE_TEXT = ("name", "tags", "note")


def column_widths() -> list[dict]:
    # wordWrap: DataTable passes on only the CSS properties it knows, and overflowWrap is not
    # one of them (word-wrap is its other name).
    return [{"if": {"column_id": c}, "minWidth": f"{lo}px", "maxWidth": f"{hi}px",
             **({"wordWrap": "anywhere"} if c in FREE_TEXT else {})}
            for c, (lo, hi) in COLUMN_WIDTHS.items()]


def _loss(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else f"{v:.4g}"


def _md(text: str) -> str:
    """User text inside a markdown link label: no brackets to break out of it."""
    return "".join("\\" + c if c in "\\[]()*_`<>" else c for c in text)


def status_text(run: dict[str, Any]) -> str:
    """The status, with where it diverged, or who a queued run waits for (no online worker
    consumes its queue: a cuda run and no GPU worker, say)."""
    if run.get("diverged_at") is not None:
        return f"{run['status']} at {run['diverged_at']}"
    if run.get("waiting_for"):
        return f"{run['status']} — waiting for {run['waiting_for']}"
    return run["status"]


def table_rows(runs: list[dict[str, Any]], export_url, prefix: str = "/") -> list[dict]:
    """One table row per run (API JSON), links relative to the app's path prefix."""
    rows = []
    for r in runs:
        sdk = r.get("source") == "sdk"
        # An SDK run has no spec: its config may name its normalisation.
        norm = r["spec"].get("norm", "") if not sdk else str((r.get("config") or {})
                                                                .get("norm", ""))
        exp = r.get("experiment_id")
        created = r.get("created_at") or ""
        rows.append({
            "id": r["id"],
            "name": f"[{_md(r['name'])}]({prefix}compare?runs={r['id']})",
            "source": "SDK" if sdk else "",
            "norm": norm_label(norm),
            "experiment": f"[experiment {exp}]({prefix}experiments/{exp})" if exp else "",
            "status": status_text(r),
            "progress": step_text(r) + (f" ({100 * r['progress']:.0f}%)" if r["total"] else ""),
            "eta": fmt_duration(r.get("eta_seconds")),
            "device": r.get("device") or "",
            "worker": r.get("worker") or "",
            "last_loss": _loss(r.get("last_loss")),
            "created": _when(created),
            "csv": f"[CSV]({export_url(r['id'])})",
            "tags": " ".join(r.get("tags") or []),
            "note": _short(r.get("note")),
            "_status": r["status"],
            "_norm": norm,
            "_pct": 100 * float(r.get("progress") or 0),
        })
    return rows


def _short(note: str | None, chars: int = NOTE_CHARS) -> str:
    """A note's first line, cut to fit a table cell (the run's page shows all of it)."""
    text = (note or "").strip()
    first = text.splitlines()[0] if text else ""
    if first == text and len(text) <= chars:
        return text
    return first[:chars].rstrip() + "…"


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def row_styles(rows: list[dict]) -> list[dict]:
    """A progress bar drawn in each row's progress cell, and the status in its colour."""
    styles = []
    for row in rows:
        color = STATUS_COLORS.get(row["_status"], "#888")
        pct = row["_pct"]
        styles.append({
            "if": {"filter_query": f"{{id}} = {row['id']}", "column_id": "progress"},
            "background": (f"linear-gradient(90deg, {color}33 0%, {color}33 {pct:.1f}%, "
                           f"transparent {pct:.1f}%, transparent 100%)"),
        })
        styles.append({"if": {"filter_query": f"{{id}} = {row['id']}", "column_id": "status"},
                       "color": color, "fontWeight": 600})
        if row.get("source"):  # the SDK badge
            styles.append({"if": {"filter_query": f"{{id}} = {row['id']}",
                                  "column_id": "source"},
                           "color": "white", "backgroundColor": SDK_COLOR, "fontWeight": 600,
                           "fontSize": "0.8em", "textAlign": "center"})
        # An inset shadow, not a border: the list view's own borders override cell borders.
        styles.append({"if": {"filter_query": f"{{id}} = {row['id']}", "column_id": "norm"},
                       "boxShadow": f"inset 4px 0 0 {norm_color(row['_norm'])}",
                       "paddingLeft": "14px"})
    return styles


def workers_line(workers: list[dict[str, Any]]) -> str:
    if not workers:
        return "No worker online: queued runs wait until one starts (`landscope worker`)."
    parts = [f"{w['name']} ({w['device']}, "
             + (f"training run {w['current_run_id']})" if w.get("current_run_id") else "idle)")
             for w in workers]
    return "Workers: " + "; ".join(parts)


def targets(action: str, ids: list[int] | None, rows: list[dict] | None) -> list[int]:
    """The selected runs an action applies to: cancel the active ones, delete the finished;
    only runs the table shows (the user can only have picked those)."""
    status = {r["id"]: r["_status"] for r in rows or []}
    return [i for i in sorted(ids or [])
            if i in status and (status[i] in FINISHED) == (action == "delete")]


def selection_for(ids: list[int] | None, rows: list[dict] | None
                  ) -> tuple[list[int], list[int]]:
    """The table's selection of the runs `ids` among `rows`: (row indices, run ids), runs
    no longer shown left out.

    Dash's DataTable ticks its checkboxes from `selected_rows`, indices into `data`, and on
    each click derives `selected_row_ids` from them. Indices belong to one `data`: once a
    delete or a new run shifts the rows, the same indices tick other runs, and the next click
    turns those into ids. So the run ids are what the page keeps, and the indices are
    recomputed from them whenever the rows change; the two are always written together."""
    wanted, rows = set(ids or []), rows or []
    shown = [i for i, r in enumerate(rows) if r["id"] in wanted]
    kept = {rows[i]["id"] for i in shown}
    return shown, [i for i in ids or [] if i in kept]


def reconcile(ids: list[int] | None, indices: list[int] | None,
              rows: list[dict] | None) -> tuple[Any, Any]:
    """(selected_rows, selected_row_ids) for new `rows`, no_update for both where the ticks
    already sit on the selected runs (so a poll that changes nothing leaves the table's
    selection alone)."""
    want_indices, want_ids = selection_for(ids, rows)
    if sorted(indices or []) == want_indices and len(want_ids) == len(ids or []):
        return no_update, no_update
    return want_indices, want_ids


def act_on(client: ApiClient, action: str, ids: list[int], token: str | None) -> str:
    """Cancel or delete the selected runs; one sentence saying what happened to each."""
    done, failed = [], []
    for rid in ids:
        try:
            if action == "cancel":
                client.cancel_run(rid, token=token)
            else:
                client.delete_run(rid, token=token)
            done.append(str(rid))
        except ApiError as exc:
            failed.append(f"#{rid}: {exc.message}")
    verb = "cancelled" if action == "cancel" else "deleted"
    msg = f"{verb.capitalize()} {', '.join('#' + d for d in done)}. " if done else ""
    return msg + (" ".join(failed) if failed else "")


def filter_values(query: dict[str, Any]) -> dict[str, Any]:
    """The filters a URL query asks for (/?status=running&norm=batch&tag=a,b), as the
    controls' values; anything malformed is left out (the page opens unfiltered instead)."""
    out: dict[str, Any] = {}
    if query.get("status") in STATUS_COLORS:
        out["status"] = query["status"]
    if query.get("norm") in NORMS:
        out["norm"] = query["norm"]
    for key in ("model", "dataset", "tag"):
        if isinstance(query.get(key), str) and len(query[key]) <= 200:
            out[key] = query[key]
    exp = query.get("experiment")
    if isinstance(exp, str) and exp.isascii() and exp.isdigit() and 0 < int(exp) < 2**31:
        out["experiment"] = int(exp)
    return out


def experiment_options(client: ApiClient | None, chosen: int | None = None) -> list[dict]:
    """The newest experiments, for the experiment filter (an id from the URL is kept even
    when it is not among them)."""
    try:
        exps = client.experiments(limit=200) if client is not None else []
    except ApiError:
        exps = []
    opts = [{"label": f"#{e['id']} {e['name']}", "value": e["id"]} for e in exps]
    if chosen is not None and chosen not in {o["value"] for o in opts}:
        opts.insert(0, {"label": f"#{chosen}", "value": chosen})
    return opts


def filter_controls(values: dict[str, Any], exp_options: list[dict]) -> list:
    return [
        dcc.Dropdown(id="runs-norm", placeholder="any normalisation", clearable=True,
                     value=values.get("norm"), className="filter-select",
                     options=[{"label": norm_label(n), "value": n} for n in NORMS]),
        dcc.Input(id="runs-model", placeholder="model", debounce=True, list="runs-models",
                  value=values.get("model"), className="filter-input"),
        html.Datalist(id="runs-models", children=[html.Option(value=m) for m in MODELS]),
        dcc.Input(id="runs-dataset", placeholder="dataset", debounce=True,
                  list="runs-datasets", value=values.get("dataset"), className="filter-input"),
        html.Datalist(id="runs-datasets", children=[html.Option(value=d) for d in DATASETS]),
        dcc.Dropdown(id="runs-experiment", placeholder="any experiment", clearable=True,
                     value=values.get("experiment"), options=exp_options,
                     className="filter-select"),
        dcc.Input(id="runs-tag", placeholder="tags (all of)…", debounce=True,
                  value=values.get("tag"), className="filter-input"),
    ]


def layout(prefix: str = "/", client: ApiClient | None = None, **query) -> html.Div:
    values = filter_values(query)
    return html.Div([
        dcc.Interval(id="runs-poll", interval=REFRESH_MS),
        dcc.Store(id="runs-changed"),
        dcc.ConfirmDialog(id="runs-confirm-delete",
                          message="Delete the selected runs and all their metrics?"),
        html.Div([html.H2("Runs", className="page-title"),
                  dcc.Link("New experiment", href=f"{prefix}new", className="btn btn-primary")],
                 className="page-head"),
        html.P(id="runs-workers", className="muted"),
        html.Div([
            dcc.Dropdown(id="runs-status", placeholder="any status", clearable=True,
                         value=values.get("status"), options=list(STATUS_COLORS),
                         className="status-filter"),
            dcc.Input(id="runs-name", placeholder="name contains…", debounce=True,
                      className="name-filter"),
            *filter_controls(values, experiment_options(client, values.get("experiment"))),
        ], className="toolbar card runs-filters"),
        html.Div([
            html.Button("Compare selected", id="runs-compare", className="btn btn-primary",
                        disabled=True),
            html.Button("Cancel selected", id="runs-cancel", className="btn", disabled=True),
            html.Button("Delete selected", id="runs-delete", className="btn btn-danger",
                        disabled=True),
            html.Span(id="runs-message", className="message"),
        ], className="toolbar card"),
        dash_table.DataTable(
            id="runs-table", columns=COLUMNS, data=[], row_selectable="multi",
            selected_rows=[], selected_row_ids=[], sort_action="native", page_size=25,
            markdown_options={"link_target": "_self"},
            hidden_columns=[], style_as_list_view=True, cell_selectable=False,
            style_table={"overflowX": "auto"},
            style_header={"fontWeight": 600, "backgroundColor": "#f4f6f9"},
            # Cells wrap (at spaces and hyphens) within their column's cap: the whole table
            # fits a 1400 px window, the CSV link included, and no cell is cut short.
            style_cell={"fontFamily": FONT, "fontSize": "13px", "padding": "6px 6px",
                        "textAlign": "left", "whiteSpace": "normal", "height": "auto"},
            style_cell_conditional=column_widths(),
        ),
    ], className="runs-page")


def register(app: Dash, client: ApiClient, poll_ms: int) -> dict[str, Callable]:
    """Route and callbacks; returns the callback functions (tests call them directly)."""
    del poll_ms
    prefix = app.config.requests_pathname_prefix
    dash.register_page(__name__, path=PATH, name="Runs", title="Landscope · runs", order=0,
                       layout=lambda **q: layout(prefix, client, **q))

    @app.callback(
        Output("runs-table", "data"), Output("runs-table", "style_data_conditional"),
        Output("runs-workers", "children"),
        # The selection is set with the rows it indexes, in one response (selection_for).
        Output("runs-table", "selected_rows"), Output("runs-table", "selected_row_ids"),
        Input("runs-poll", "n_intervals"), Input("runs-status", "value"),
        Input("runs-name", "value"), Input("runs-changed", "data"),
        *(Input(f"runs-{f}", "value") for f in FILTERS),
        State("runs-table", "selected_row_ids"), State("runs-table", "selected_rows"),
    )
    def refresh(_n, status, name, _changed, norm=None, model=None, dataset=None,
                experiment=None, tag=None, selected_ids=None, selected_rows=None):
        try:
            runs = client.filter_runs(
                status=status, name=name, norm=norm, model=(model or "").strip() or None,
                dataset=(dataset or "").strip() or None, experiment_id=experiment,
                tags=parse_tags(tag))
            workers = client.workers()
        except ApiError as exc:
            if exc.status == 422:  # a filter the API refuses (a tag with a space, say)
                return ([], [], f"No runs: {exc.message}",
                        *reconcile(selected_ids, selected_rows, []))
            return (no_update, no_update, f"Could not reach the API: {exc.message}",
                    no_update, no_update)
        rows = table_rows(runs, client.export_url, prefix)
        return (rows, row_styles(rows), workers_line(workers),
                *reconcile(selected_ids, selected_rows, rows))

    @app.callback(
        Output("runs-compare", "disabled"), Output("runs-cancel", "disabled"),
        Output("runs-delete", "disabled"),
        # The rows too: a selected run that finishes (or starts) while selected changes which
        # buttons apply, with no click to say so.
        Input("runs-table", "selected_row_ids"), Input("runs-table", "data"),
    )
    def selection(ids, rows):
        ids = selection_for(ids, rows)[1]
        return (not ids, not targets("cancel", ids, rows), not targets("delete", ids, rows))

    @app.callback(Output("nav", "href", allow_duplicate=True),
                  Input("runs-compare", "n_clicks"), State("runs-table", "selected_row_ids"),
                  State("runs-table", "data"), prevent_initial_call=True)
    def compare(n_clicks, ids, rows):
        # Fires when the page is inserted too (nav lives outside it): only a click counts.
        ids = selection_for(ids, rows)[1]
        if not n_clicks or not ids:
            return no_update
        return f"{prefix}compare?runs={','.join(str(i) for i in sorted(ids))}"

    @app.callback(Output("runs-confirm-delete", "displayed"),
                  Input("runs-delete", "n_clicks"), prevent_initial_call=True)
    def confirm(_n):
        return True

    @app.callback(
        Output("runs-message", "children"), Output("runs-changed", "data"),
        Output("runs-table", "selected_row_ids"), Output("runs-table", "selected_rows"),
        Input("runs-cancel", "n_clicks"), Input("runs-confirm-delete", "submit_n_clicks"),
        State("runs-table", "selected_row_ids"), State("runs-table", "data"),
        State("token", "value"), prevent_initial_call=True,
    )
    def act(cancel_clicks, delete_clicks, ids, rows, token):
        if not (cancel_clicks or delete_clicks):
            raise PreventUpdate
        action = "cancel" if dash.ctx.triggered_id == "runs-cancel" else "delete"
        msg = act_on(client, action, targets(action, ids, rows), token)
        if action == "cancel":  # the runs stay where they are, and selected
            return msg, msg, no_update, no_update
        # Both halves of the selection: clearing only the ids left the deleted rows'
        # indices ticking whichever runs moved into their places.
        return msg, msg, [], []

    return {"refresh": refresh, "selection": selection, "compare": compare, "act": act}
