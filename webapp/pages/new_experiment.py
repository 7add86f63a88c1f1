"""/new: launch an experiment. Pick a preset (the paper's figures, quick CPU demos) and adjust
it; the cost of what would launch (extra passes per step, least slowdown against plain
training, and the estimates the server's limits check: parameters, memory, dataset, training
steps, marked when over this server's limits; then the server's dry run, POST
/experiments/cost: per run the training time, the analyses the experiment will run on it by
default with their forward passes, HVPs and time, and the snapshots' disk) updates as you
type; the API's validation errors appear at the field they concern; launching opens the
experiment's page."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import dash
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from server.spec import NORMS
from webapp import formspec
from webapp.client import ApiClient, ApiError
from webapp.components import swatch
from webapp.style import norm_color, norm_label

PATH = "/new"
DEFAULT_PRESET = "quick-mlp"
INPUT_FIELDS = [f for f in formspec.FIELDS if f != "preset"]
MODELS = [("mlp", "MLP"), ("vgg", "VGG (CIFAR configs)"), ("resnet", "ResNet (CIFAR, 6n+2)"),
          ("dln", "deep linear network")]
DATASETS = [("mnist1d", "mnist1d (generated offline)"), ("digits", "digits (scikit-learn)"),
            ("cifar10", "CIFAR-10"), ("gaussian_linear", "Gaussian linear task (DLN)")]


def _field(name: str, label: str, control: Any, help_text: str = "") -> html.Div:
    return html.Div([
        html.Label(label, htmlFor=f"new-{name}"), control,
        html.Div(help_text, className="help") if help_text else None,
        html.Div(id=f"err-{name}", className="field-error"),
    ], className="field", id=f"field-{name}")


def _num(name: str, **kw: Any) -> dcc.Input:
    return dcc.Input(id=f"new-{name}", type="number", className="input", **kw)


def _text(name: str, **kw: Any) -> dcc.Input:
    return dcc.Input(id=f"new-{name}", type="text", className="input", **kw)


def norm_options() -> list[dict[str, Any]]:
    return [{"label": html.Span([swatch(norm_color(n)), norm_label(n)]), "value": n}
            for n in NORMS]


def layout(**_query) -> html.Div:
    fieldsets = [
        ("What to compare", [
            _field("preset", "Preset", dcc.Dropdown(id="new-preset", placeholder="custom",
                                                    clearable=True),
                   "the paper's figures (full scale, GPU) and quick CPU demonstrations"),
            html.P(id="new-preset-text", className="help preset-text"),
            _field("norms", "Normalisations", dcc.Checklist(
                id="new-norms", options=norm_options(), inline=True, value=[]),
                "one run per normalisation, same seed and data order"),
            _field("lrs", "Learning rates", _text("lrs", placeholder="0.1, 0.5"),
                   "several values: one run per combination"),
            _field("name", "Name", _text("name", placeholder="default: the preset's name")),
        ]),
        ("Model and data", [
            _field("model", "Model", dcc.Dropdown(
                id="new-model", clearable=False,
                options=[{"label": lab, "value": v} for v, lab in MODELS])),
            _field("vgg_config", "VGG layers", dcc.RadioItems(
                id="new-vgg_config", inline=True,
                options=[{"label": "VGG-11", "value": 11}, {"label": "VGG-16", "value": 16}])),
            _field("width", "Width", _num("width", min=0, step="any"),
                   "VGG: channel multiplier (1 = paper); MLP/DLN: hidden units"),
            _field("depth", "Depth", _num("depth", min=1, step=1), "linear layers"),
            _field("dataset", "Dataset", dcc.Dropdown(
                id="new-dataset", clearable=False,
                options=[{"label": lab, "value": v} for v, lab in DATASETS])),
        ]),
        ("Training", [
            _field("steps", "Steps", _num("steps", min=1, step=1)),
            _field("batch", "Batch size", _text("batch"), "a number, or 'full'"),
            _field("seed", "Seed", _num("seed", min=0, step=1)),
            _field("device", "Device", dcc.Dropdown(id="new-device", clearable=False)),
        ]),
        ("Probes", [
            _field("stride", "Probe every", _num("stride", min=0, step=1),
                   "steps between landscape, ICS and activation probes (0 = off)"),
            _field("multipliers", "Step sizes η / LR", _text("multipliers"),
                   "the landscape probe's multipliers of the LR (paper: 0.5, 1, 2, 4)"),
            _field("ics_layers", "ICS layers", _text("ics_layers"),
                   "weight layers, counted from the input"),
            _field("sharpness", "Sharpness every", _num("sharpness", min=0, step=1),
                   "largest Hessian eigenvalue by Lanczos (0 = off)"),
            _field("eval_every", "Test every", _num("eval_every", min=0, step=1)),
        ]),
    ]
    form = [html.Fieldset([html.Legend(title), *fields], className="card fieldset")
            for title, fields in fieldsets]
    side = html.Div([
        html.Div([html.H3("Cost"), html.Div(id="new-cost")], className="card cost-card"),
        html.Div(id="err-form", className="field-error form-error"),
        html.Button("Launch", id="new-launch", className="btn btn-primary btn-large"),
        html.Div(id="new-result", className="message"),
    ], className="new-side")
    return html.Div([
        dcc.Store(id="new-presets"),
        dcc.Store(id="new-limits"),
        dcc.Store(id="new-init", data=1),
        # This page visit's launch nonce: with the form's content it makes the launch's
        # Idempotency-Key, so a double click (or a retried callback) creates one experiment.
        dcc.Store(id="new-launch-nonce", data=uuid.uuid4().hex),
        html.H2("New experiment", className="page-title"),
        html.Div([html.Div(form, className="new-form"), side], className="new-grid"),
    ], className="new-page")


def _amount(key: str, v: float) -> str:
    return f"{v:,.0f}" if key in ("params", "cost_steps") else f"{v:,.1f}"


def estimate_table(estimates: list[dict[str, Any]]) -> html.Table:
    """The server-side estimates (server/cost.py) against this server's limits; an estimate
    over its limit is marked, since the server will refuse that run."""
    rows = []
    for e in estimates:
        limit = "" if e["limit"] is None else _amount(e["key"], e["limit"])
        mark = html.Strong("over the limit", className="over") if e["over"] else ""
        rows.append(html.Tr([html.Td(e["label"]), html.Td(_amount(e["key"], e["value"])),
                             html.Td(limit), html.Td(mark)],
                            className="over" if e["over"] else None,
                            id=f"new-estimate-{e['key']}"))
    return html.Table([html.Thead(html.Tr([html.Th("estimate (largest run)"), html.Th("value"),
                                           html.Th("server limit"), html.Th("")])),
                       html.Tbody(rows)], className="cost-table estimate-table")


def _seconds(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.2g} s" if s < 10 else f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _bytes(b: float | None) -> str:
    if b is None:
        return "?"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:,.1f} {unit}"
    return f"{b:.0f} B"


def _count(v: float | None) -> str:
    return "?" if v is None else f"{v:,.0f}"


def server_cost(answer: dict[str, Any] | str) -> html.Div:
    """POST /experiments/cost's answer: per run its training, the analyses the experiment
    runs on it by default and its snapshots' disk, then the totals; or why it is missing."""
    if isinstance(answer, str):
        return html.Div(html.P(answer, className="muted"), id="new-server-cost")
    rows = []
    for r in answer["runs"][:16]:
        done = r["analyses"]
        what = ", ".join(a["kind"] for a in done) or "none"
        rows.append(html.Tr([
            html.Td(r["name"]), html.Td(_seconds(r["training"]["seconds"])),
            html.Td(what), html.Td(_count(_total_of(done, "forward_passes"))),
            html.Td(_count(_total_of(done, "hvps"))),
            html.Td(_seconds(_total_of(done, "seconds"))),
            html.Td(f"{r['snapshots']['count']} · {_bytes(r['snapshots']['bytes'])}"),
        ]))
    t = answer["total"]
    rows.append(html.Tr([
        html.Th(f"all {t['runs']} runs"), html.Th(_seconds(t["training_seconds"])),
        html.Th(f"{t['analyses']} analyses"), html.Th(_count(t["analysis_forward_passes"])),
        html.Th(_count(t["analysis_hvps"])), html.Th(_seconds(t["analysis_seconds"])),
        html.Th(f"{t['snapshots']} · {_bytes(t['snapshot_bytes'])}"),
    ], id="new-cost-total"))
    device = {r["device_assumed"] for r in answer["runs"]}
    return html.Div([
        html.H4("Training, default analyses and disk (server estimate)"),
        html.Table([html.Thead(html.Tr([
            html.Th("run"), html.Th("training"), html.Th("analyses"), html.Th("forward passes"),
            html.Th("HVPs"), html.Th("analyses time"), html.Th("snapshots · disk")])),
            html.Tbody(rows)], className="cost-table server-cost-table"),
        html.P([html.Strong(_seconds(t["seconds"]), id="new-cost-seconds"),
                f" of {'/'.join(sorted(device))} time in all, one run after another (an order "
                "of magnitude: an assumed rate per device); ",
                html.Strong(_bytes(t["snapshot_bytes"]), id="new-cost-disk"),
                " of snapshots on the server's disk."], className="muted"),
    ], id="new-server-cost")


def _total_of(items: list[dict[str, Any]], key: str) -> float | None:
    values = [a[key] for a in items]
    return None if None in values else sum(values)


def fetch_server_cost(client: ApiClient, values: dict[str, Any]) -> dict[str, Any] | str:
    """The server's dry run of the form as it stands, or why there is none."""
    parsed = formspec.parse(values)
    if parsed.errors:
        return "Fix the fields marked in red to see the server's estimate."
    try:
        return client.experiment_cost(parsed.body)
    except ApiError as exc:
        msgs = [msg for _loc, msg in exc.field_errors()] or [exc.message]
        return f"The server cannot cost this experiment: {'; '.join(msgs)}"


def cost_panel(specs: list, errors: dict[str, str], limits: dict[str, Any] | None = None,
               server: dict[str, Any] | str | None = None) -> Any:
    c = formspec.cost(specs, limits)
    if not c:
        return html.P("Fix the fields marked in red to see the cost.", className="muted")
    rows = []
    for probe, (passes, every, *most) in c["detail"].items():
        extra = c["passes"][probe]
        # sharpness stops on its tolerance: from its least passes up to its cap
        span = f"{passes}–{most[0]}" if most and most[0] != passes else f"{passes}"
        what = f"{span} passes every {every} steps" if every else "off"
        rows.append(html.Tr([html.Td(probe), html.Td(what), html.Td(f"+{extra:.3g}")]))
    return html.Div([
        html.P([html.Strong(f"{c['runs']} run{'s' * (c['runs'] != 1)}"),
                f", {c['steps']:,} training steps in all"]),
        html.Table([html.Thead(html.Tr([html.Th("probe"), html.Th("cost"),
                                        html.Th("passes/step")])), html.Tbody(rows)],
                   className="cost-table"),
        html.P([html.Span("Expected slowdown: at least "),
                html.Strong(f"{c['floor']:.2f}×", id="new-floor"),
                html.Span(" plain training (forward+backward passes; activations, gradient "
                          "norm and distance ride on the training pass)")]),
        estimate_table(c["estimates"]),
        html.P(f"{c['cost_steps_total']:,.0f} training-step units in all "
               "(steps × the probe floor, plus test evaluations)", className="muted"),
        server_cost(server) if server is not None else None,
        html.Ul([html.Li(s.name_hint()) for s in specs[:16]], className="run-list"),
    ])


def register(app: Dash, client: ApiClient, poll_ms: int) -> dict[str, Callable]:
    """Route and callbacks; returns the callback functions (tests call them directly)."""
    del poll_ms
    dash.register_page(__name__, path=PATH, name="New experiment",
                       title="Landscope · new experiment", order=1, layout=layout)
    prefix = app.config.requests_pathname_prefix
    errs = [Output(f"err-{f}", "children") for f in formspec.FIELDS] + [
        Output("err-form", "children")]
    inputs = [Input(f"new-{f}", "value") for f in formspec.FIELDS]

    @app.callback(Output("new-presets", "data"), Output("new-preset", "options"),
                  Output("new-preset", "value"), Output("new-device", "options"),
                  Output("new-limits", "data"), Input("new-init", "data"))
    def load(_):
        try:
            presets = client.presets()
            devices = sorted({w["device"] for w in client.workers()})
            limits = client.limits()
        except ApiError as exc:
            return [], [], None, [{"label": f"API unreachable: {exc.message}",
                                   "value": "auto"}], {}
        options = [{"label": f"{p['name']}" + (f" — Fig {p['figures']}" if p["figures"] else ""),
                    "value": p["name"]} for p in presets]
        dev = ["auto", "cpu", "cuda", *[d for d in devices if d not in ("cpu", "cuda")]]
        value = DEFAULT_PRESET if any(p["name"] == DEFAULT_PRESET for p in presets) else None
        return presets, options, value, dev, limits

    @app.callback(*[Output(f"new-{f}", "value") for f in INPUT_FIELDS],
                  Output("new-preset-text", "children"),
                  Input("new-preset", "value"), State("new-presets", "data"))
    def fill(name, presets):
        preset = _find(presets, name)
        values = formspec.values_from_preset(preset)
        return (*[values[f] for f in INPUT_FIELDS], preset["description"] if preset else "")

    @app.callback(Output("field-vgg_config", "style"), Output("field-depth", "style"),
                  Input("new-model", "value"))
    def model_fields(model):
        hide = {"display": "none"}
        if model == "resnet":  # its depth is resnet_depth (20 by default; presets set it)
            return hide, hide
        return (None, hide) if model == "vgg" else (hide, None)

    @app.callback(Output("new-cost", "children"), *errs,
                  Output("new-result", "children", allow_duplicate=True),
                  *inputs, State("new-presets", "data"), State("new-limits", "data"),
                  prevent_initial_call="initial_duplicate")
    def check(*args):
        values = dict(zip(formspec.FIELDS, args[:-2], strict=True))
        specs, errors = check_values(values, _find(args[-2], values["preset"]))
        # The server's dry run only for a form that passes the local check: a keystroke that
        # breaks a field costs no request.
        server = fetch_server_cost(client, values) if specs else None
        # An edit makes the last launch's answer stale: the fields now speak for themselves.
        return (cost_panel(specs, errors, args[-1], server), *error_outputs(errors), "")

    @app.callback(Output("nav", "href", allow_duplicate=True),
                  *[Output(o.component_id, "children", allow_duplicate=True) for o in errs],
                  Output("new-result", "children"),
                  Input("new-launch", "n_clicks"), *[State(i.component_id, "value")
                                                     for i in inputs],
                  State("token", "value"), State("new-launch-nonce", "data"),
                  prevent_initial_call=True)
    def launch(n_clicks, *args):
        # Fires when the page is inserted too (its output, nav, lives outside the page, and
        # Dash then ignores prevent_initial_call): only a click launches.
        if not n_clicks:
            raise PreventUpdate
        values = dict(zip(formspec.FIELDS, args[:-2], strict=True))
        href, errors, message = submit(client, values, args[-2], prefix, nonce=args[-1])
        return (href or no_update, *error_outputs(errors), message)

    return {"load": load, "fill": fill, "model_fields": model_fields, "check": check,
            "launch": launch}


def launch_key(nonce: str | None, body: dict[str, Any]) -> str | None:
    """The Idempotency-Key of launching `body` from the page visit `nonce` (None: none)."""
    if not nonce:
        return None
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
    return f"dashboard-{nonce[:64]}-{digest}"


def _find(presets: list[dict] | None, name: str | None) -> dict | None:
    return next((p for p in presets or [] if p["name"] == name), None)


def check_values(values: dict[str, Any], preset: dict | None) -> tuple[list, dict[str, str]]:
    parsed = formspec.parse(values)
    if parsed.errors:
        return [], parsed.errors
    return formspec.local_check(parsed.body, preset)


def error_outputs(errors: dict[str, str]) -> list[str]:
    return [errors.get(f, "") for f in formspec.FIELDS] + [errors.get(formspec.FORM, "")]


def submit(client: ApiClient, values: dict[str, Any], token: str | None,
           prefix: str = "/", nonce: str | None = None) -> tuple[str | None, dict[str, str], str]:
    """POST the form; (page to open, errors by field, message). With a `nonce` (one per page
    visit), the same form launched twice is one experiment: the second answer replays the
    first (the API's Idempotency-Key)."""
    parsed = formspec.parse(values)
    if parsed.errors:
        return None, parsed.errors, "Fix the fields marked in red."
    try:
        exp = client.create_experiment(parsed.body, token=token,
                                       idempotency_key=launch_key(nonce, parsed.body))
    except ApiError as exc:
        errors: dict[str, str] = {}
        for loc, msg in exc.field_errors():
            f = formspec.field_for_loc(loc, msg)
            errors[f] = f"{errors[f]}; {msg}" if f in errors else msg
        if not errors:
            hint = " Enter the server's API token at the top right." if exc.status == 401 else ""
            errors[formspec.FORM] = exc.message + hint
        return None, errors, "The server did not accept this experiment."
    return f"{prefix}experiments/{exp['id']}", {}, f"Launched experiment {exp['id']}."
