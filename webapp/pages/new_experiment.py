"""/new: launch an experiment. Pick a preset (the paper's figures, quick CPU demos) and adjust
it; the cost of what would launch (webapp/new_experiment_cost.py: extra passes per step,
least slowdown against plain training, the estimates the server's limits check, then the
server's dry run, POST /experiments/cost) updates as you type. Each field says what it takes
as you type: the spec's bounds and this server's limits (GET /limits) from the form's own
check (webapp/formspec.py), the limits only the server can check from its dry run's 422, at
the field it concerns; launching opens the experiment's page."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import dash
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from server.presets import figures_label
from server.spec import NORMS, default_width
from webapp import formspec
from webapp.client import ApiClient, ApiError
from webapp.components import swatch
from webapp.form_errors import errors_by_field
from webapp.new_experiment_cost import cost_panel
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


def _num(name: str, decimal: bool = False, **kw: Any) -> dcc.Input:
    # Text, not type=number: a number input hands Dash None for whatever breaks its min, step
    # or syntax, so -5 or 2.5 would read as an empty field; formspec.parse reads the text
    # and says what the field takes instead.
    return dcc.Input(id=f"new-{name}", type="text", className="input",
                     inputMode="decimal" if decimal else "numeric", **kw)


def _text(name: str, **kw: Any) -> dcc.Input:
    return dcc.Input(id=f"new-{name}", type="text", className="input", **kw)


def _switch(name: str, label: str) -> dcc.Checklist:
    """An on/off field: a one-option checklist, on when it holds formspec.ON."""
    return dcc.Checklist(id=f"new-{name}", options=[{"label": label, "value": formspec.ON}],
                         value=[], inline=True)


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
            _field("width", "Width", _num("width", decimal=True),
                   "VGG: channel multiplier (1 = paper); MLP/DLN: hidden units"),
            _field("depth", "Depth", _num("depth"), "linear layers"),
            _field("dataset", "Dataset", dcc.Dropdown(
                id="new-dataset", clearable=False,
                options=[{"label": lab, "value": v} for v, lab in DATASETS])),
        ]),
        ("Training", [
            _field("steps", "Steps", _num("steps")),
            _field("batch", "Batch size", _text("batch"), "a number, or 'full'"),
            _field("seed", "Seeds", _text("seed", placeholder="0, 1, 2"),
                   "several: one run per seed and normalisation; the runs of one seed share "
                   "its initialisation and data order"),
            _field("device", "Device", dcc.Dropdown(id="new-device", clearable=False)),
            _field("optimizer", "Optimiser", dcc.RadioItems(
                id="new-optimizer", inline=True,
                options=[{"label": "SGD", "value": "sgd"}, {"label": "Adam", "value": "adam"}])),
            _field("momentum", "Momentum", _num("momentum", decimal=True),
                   "SGD's heavy-ball momentum (0 = plain SGD, the paper's)"),
            _field("weight_decay", "Weight decay", _num("weight_decay", decimal=True)),
        ]),
        ("Numerics and snapshots", [
            _field("dtype", "Precision", dcc.RadioItems(
                id="new-dtype", inline=True,
                options=[{"label": "float32", "value": "float32"},
                         {"label": "float64", "value": "float64"}]),
                "of the parameters, the data and every probe"),
            _field("bf16", "bf16 autocast", _switch("bf16", "on (CUDA only, float32 runs)")),
            _field("deterministic", "Deterministic", _switch(
                "deterministic", "deterministic algorithms"),
                "on a GPU, the same seed then gives the same numbers run after run, at some "
                "cost in speed (CPU kernels are deterministic either way)"),
            _field("threads", "Torch threads", _num("threads", placeholder="worker default"),
                   "intra-op threads for each run; empty: the worker's LANDSCOPE_TORCH_THREADS"),
            _field("snapshot_every", "Snapshot every", _num("snapshot_every"),
                   "steps between saved networks, for the Landscape tab's trajectories and "
                   "step slider (0: the first and the last step only)"),
        ]),
        ("Probes", [
            _field("stride", "Probe every", _num("stride"),
                   "steps between landscape, ICS and activation probes (0 = off)"),
            _field("multipliers", "Step sizes η / LR", _text("multipliers"),
                   "the landscape probe's multipliers of the LR (paper: 0.5, 1, 2, 4)"),
            _field("ics_layers", "ICS layers", _text("ics_layers"),
                   "weight layers, counted from the input"),
            _field("sharpness", "Sharpness every", _num("sharpness"),
                   "largest Hessian eigenvalue by Lanczos (0 = off)"),
            _field("eval_every", "Test every", _num("eval_every")),
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


def fetch_server_cost(client: ApiClient, body: dict[str, Any]) -> tuple[
        dict[str, Any] | str, dict[str, str]]:
    """The server's dry run of a body that passed the local check, or why there is none;
    and its refusals by field, so that a limit only the server checks (the widest layer, the
    parameters, the runs per experiment) shows at its field as soon as it is typed."""
    try:
        return client.experiment_cost(body), {}
    except ApiError as exc:
        msgs = [msg for _loc, msg in exc.field_errors()] or [exc.message]
        # Only a 422 concerns the form; any other refusal (unreachable, a token) the card
        # says, and Launch will say again.
        return (f"The server cannot cost this experiment: {'; '.join(msgs)}",
                api_errors(exc) if exc.field_errors() else {})


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
        options = [{"label": preset_label(p), "value": p["name"]} for p in presets]
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

    @app.callback(Output("field-momentum", "style"), Input("new-optimizer", "value"))
    def optimizer_fields(optimizer):
        # Adam has no momentum of this kind: the field would be sent and silently ignored
        return {"display": "none"} if optimizer == "adam" else None

    @app.callback(Output("new-width", "value", allow_duplicate=True),
                  Input("new-model", "value"), State("new-width", "value"),
                  prevent_initial_call=True)
    def width_for_model(model, width):
        return width_for(model, width)

    @app.callback(Output("new-cost", "children"), *errs,
                  Output("new-result", "children", allow_duplicate=True),
                  *inputs, State("new-presets", "data"), State("new-limits", "data"),
                  prevent_initial_call="initial_duplicate")
    def check(*args):
        values = dict(zip(formspec.FIELDS, args[:-2], strict=True))
        preset, limits = _find(args[-2], values["preset"]), args[-1]
        parsed = formspec.parse(values, limits, preset)
        specs, errors = check_parsed(parsed, preset)
        server = None
        # The server's dry run only for a form that passes the local check: a keystroke that
        # breaks a field costs no request.
        if specs:
            server, errors = fetch_server_cost(client, parsed.body)
        # An edit makes the last launch's answer stale: the fields now speak for themselves.
        return (cost_panel(specs, errors, limits, server), *error_outputs(errors), "")

    @app.callback(Output("nav", "href", allow_duplicate=True),
                  *[Output(o.component_id, "children", allow_duplicate=True) for o in errs],
                  Output("new-result", "children"),
                  Input("new-launch", "n_clicks"), *[State(i.component_id, "value")
                                                     for i in inputs],
                  State("token", "value"), State("new-launch-nonce", "data"),
                  State("new-presets", "data"), State("new-limits", "data"),
                  prevent_initial_call=True)
    def launch(n_clicks, *args):
        # Fires when the page is inserted too (its output, nav, lives outside the page, and
        # Dash then ignores prevent_initial_call): only a click launches.
        if not n_clicks:
            raise PreventUpdate
        values = dict(zip(formspec.FIELDS, args[:-4], strict=True))
        token, nonce, presets, limits = args[-4:]
        href, errors, message = submit(client, values, token, prefix, nonce=nonce,
                                       limits=limits, preset=_find(presets, values["preset"]))
        return (href or no_update, *error_outputs(errors), message)

    return {"load": load, "fill": fill, "model_fields": model_fields,
            "optimizer_fields": optimizer_fields,
            "width_for_model": width_for_model, "check": check,
            "launch": launch}


def launch_key(nonce: str | None, body: dict[str, Any]) -> str | None:
    """The Idempotency-Key of launching `body` from the page visit `nonce` (None: none)."""
    if not nonce:
        return None
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
    return f"dashboard-{nonce[:64]}-{digest}"


def _find(presets: list[dict] | None, name: str | None) -> dict | None:
    return next((p for p in presets or [] if p["name"] == name), None)


def preset_label(p: dict[str, Any]) -> str:
    """'paper-vgg16 — Fig 1, 3a, 4', 'quick-resnet — Li et al. 2018, Fig 5 (reduced)'."""
    return f"{p['name']} — {figures_label(p['figures'])}" if p["figures"] else p["name"]


WIDTH_MODELS = ("vgg", "mlp", "dln")  # where width means something (resnet ignores it)


def width_for(model: str | None, width: Any) -> Any:
    """The width field when the model changes: the new model's default (server.spec
    default_width) where it still holds the other kind's (128 units read as 128x VGG's
    channels, or 1 as a one-unit MLP), else what the reader typed (no_update)."""
    if model not in WIDTH_MODELS:
        return no_update
    want = default_width(model)
    try:
        typed = float(str(width).strip())
    except ValueError:
        return no_update
    others = {default_width(m) for m in WIDTH_MODELS} - {want}
    return int(want) if typed in others else no_update


def check_parsed(parsed: formspec.Parsed, preset: dict | None) -> tuple[list, dict[str, str]]:
    if parsed.errors:
        return [], parsed.errors
    return formspec.local_check(parsed.body, preset)


def api_errors(exc: ApiError) -> dict[str, str]:
    """A refusal's messages by form field (a 422's loc), else the whole message at the form."""
    return errors_by_field(exc, formspec.field_for_loc, formspec.FORM)


def error_outputs(errors: dict[str, str]) -> list[str]:
    return [errors.get(f, "") for f in formspec.FIELDS] + [errors.get(formspec.FORM, "")]


def submit(client: ApiClient, values: dict[str, Any], token: str | None,
           prefix: str = "/", nonce: str | None = None, limits: dict[str, Any] | None = None,
           preset: dict[str, Any] | None = None) -> tuple[str | None, dict[str, str], str]:
    """POST the form; (page to open, errors by field, message). With a `nonce` (one per page
    visit), the same form launched twice is one experiment: the second answer replays the
    first (the API's Idempotency-Key)."""
    parsed = formspec.parse(values, limits, preset)
    if parsed.errors:
        return None, parsed.errors, "Fix the fields marked in red."
    try:
        exp = client.create_experiment(parsed.body, token=token,
                                       idempotency_key=launch_key(nonce, parsed.body))
    except ApiError as exc:
        return None, api_errors(exc), "The server did not accept this experiment."
    return f"{prefix}experiments/{exp['id']}", {}, f"Launched experiment {exp['id']}."
