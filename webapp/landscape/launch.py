"""The Landscape tab's launch form against the API: the cost panel (a dry run of
POST /analyses, or why the form cannot be costed), Launch, and the field error lines both
fill. The fields are read by webapp/landscape/form.py; the Dash wiring is in callbacks.py.
"""

from __future__ import annotations

from typing import Any

from dash import html, no_update

from server.analysis_spec import DIRECTIONS_FOR
from webapp.client import ApiClient, ApiError
from webapp.landscape.form import OWN_LINE, FormError, api_errors, spec_of, summary
from webapp.landscape.layout import direction_options, points_hint, points_placeholder

# What the text fields hold at the moment Launch is clicked: their `value` props lag behind
# typing by the debounce pause.
READ_TYPED = """function(n) {
    if (!n) { return window.dash_clientside.no_update; }
    var read = function(id) { var el = document.getElementById(id);
                              return el ? el.value : null; };
    return {n: n, steps: read('ls-steps'), points: read('ls-points'),
            samples: read('ls-samples'), seed: read('ls-seed')};
}"""


def directions_for(kind: str) -> tuple[list[dict[str, str]], str]:
    return direction_options(kind), DIRECTIONS_FOR.get(kind, ("random",))[0]


def points_field(kind: str) -> tuple[str, bool, str]:
    """(placeholder, disabled, hint) of Grid points per axis for a kind."""
    return points_placeholder(kind), kind == "spectrum", points_hint(kind)


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


def no_cost(errors: dict[str, str]) -> html.Div:
    """The cost panel when the form cannot be costed: never an old cost beside bad fields."""
    return html.Div([html.Strong("Cost"), html.P(
        f"Cannot cost this analysis. {summary(errors)}", className="error")])


def field_lines(errors: dict[str, str]) -> list[str]:
    """The error line of each field that has one, in OWN_LINE order ('' clears it)."""
    return [errors.get(f, "") for f in OWN_LINE]


def _errors_of(exc: ApiError) -> dict[str, str]:
    return api_errors(exc)


def preview(client: ApiClient, experiment_id: int, *form: Any, token: str | None = None
            ) -> tuple[Any, list[str]]:
    """(the cost panel, the field error lines): the cost of a dry run, or why there is none."""
    try:
        spec = spec_of(*form)
        body = client.create_analyses({"experiment_id": experiment_id, "spec": spec,
                                       "dry_run": True}, token=token)
    except FormError as exc:
        return no_cost(exc.errors), field_lines(exc.errors)
    except ApiError as exc:
        errors = _errors_of(exc)
        return no_cost(errors), field_lines(errors)
    return cost_view(body.get("cost") or {}), field_lines({})


def launch(client: ApiClient, experiment_id: int, launched: int, *form: Any,
           token: str | None = None) -> tuple[Any, int, list[str]]:
    """(message, the new launch count, the field error lines): a count that changes makes
    the list refresh. The form is read again here: Launch never goes by an earlier check."""
    try:
        body = client.create_analyses({"experiment_id": experiment_id,
                                       "spec": spec_of(*form), "dry_run": False}, token=token)
    except FormError as exc:
        errors = exc.errors
    except ApiError as exc:
        errors = _errors_of(exc)
    else:
        made = body.get("analyses") or []
        ids = ", ".join(f"#{a['id']}" for a in made)
        return (f"Launched {len(made)} analyses ({ids}).", (launched or 0) + 1,
                field_lines({}))
    return (html.Span(f"Not launched. {summary(errors)}", className="error"), no_update,
            field_lines(errors))


def typed_form(typed: dict[str, Any] | None, kind: str | None, direction: str | None,
               bn: str | None, options: list[str] | None = None) -> tuple:
    """The form's fields in FORM order, the text ones as READ_TYPED found them."""
    t = typed or {}
    return (kind, t.get("steps"), direction, t.get("points"), bn, t.get("samples"), options,
            t.get("seed"))
