"""The new-experiment page's cost box: the probe cost of what would launch, the estimates
the server's limits check (server/cost.py, against GET /limits) and the server's dry run
(POST /experiments/cost): per run its training, default analyses and snapshots' disk. Pure
rendering; webapp/pages/new_experiment.py fetches and calls it."""

from __future__ import annotations

from typing import Any

from dash import html

from server.experiment_cost import duration_text
from webapp import formspec


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


def _bytes(b: float | None) -> str:
    if b is None:
        return "?"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:,.1f} {unit}"
    return f"{b:.0f} B"


def _count(v: float | None) -> str:
    return "?" if v is None else f"{v:,.0f}"


def _analyses_cell(kinds: str, passes: float | None, hvps: float | None,
                   seconds: float | None) -> list:
    """What runs by default, over its forward passes, HVPs and time: one cell, so that the
    table fits the side column (seven columns made the page wider than a 1400 px window)."""
    return [kinds, html.Br(), html.Span(
        f"{_count(passes)} passes · {_count(hvps)} HVPs · {duration_text(seconds)}",
        className="muted")]


def server_cost(answer: dict[str, Any] | str) -> html.Div:
    """POST /experiments/cost's answer: per run its training, the analyses the experiment
    runs on it by default and its snapshots' disk, then the totals; or why it is missing."""
    if isinstance(answer, str):
        return html.Div(html.P(answer, className="muted"), id="new-server-cost")
    rows = []
    for r in answer["runs"][:16]:
        done = r["analyses"]
        rows.append(html.Tr([
            html.Td(r["name"]), html.Td(duration_text(r["training"]["seconds"])),
            html.Td(_analyses_cell(", ".join(a["kind"] for a in done) or "none",
                                   _total_of(done, "forward_passes"),
                                   _total_of(done, "hvps"), _total_of(done, "seconds"))),
            html.Td(f"{r['snapshots']['count']} · {_bytes(r['snapshots']['bytes'])}"),
        ]))
    t = answer["total"]
    rows.append(html.Tr([
        html.Th(f"all {t['runs']} runs"), html.Th(duration_text(t["training_seconds"])),
        html.Th(_analyses_cell(f"{t['analyses']} analyses", t["analysis_forward_passes"],
                               t["analysis_hvps"], t["analysis_seconds"])),
        html.Th(f"{t['snapshots']} · {_bytes(t['snapshot_bytes'])}"),
    ], id="new-cost-total"))
    device = {r["device_assumed"] for r in answer["runs"]}
    return html.Div([
        html.H4("Training, default analyses and disk (server estimate)"),
        html.Table([html.Thead(html.Tr([
            html.Th("run"), html.Th("training"),
            html.Th(["analyses", html.Br(), html.Span("passes · HVPs · time", className="muted")]),
            html.Th("snapshots · disk")])),
            html.Tbody(rows)], className="cost-table server-cost-table"),
        html.P([html.Strong(duration_text(t["seconds"]), id="new-cost-seconds"),
                f" of {'/'.join(sorted(device))} time in all, one run after another (an order "
                "of magnitude: an assumed rate per device); ",
                html.Strong(_bytes(t["snapshot_bytes"]), id="new-cost-disk"),
                " of snapshots on the server's disk."], className="muted"),
    ], id="new-server-cost")


def _total_of(items: list[dict[str, Any]], key: str) -> float | None:
    values = [a[key] for a in items]
    return None if None in values else sum(values)


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


