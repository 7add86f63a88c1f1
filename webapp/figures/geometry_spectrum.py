"""Hessian spectra (Ghorbani et al. 2019): the eigenvalue density of several runs overlaid on
a log scale (with and without BatchNorm, where outlier eigenvalues show as isolated bumps far
from the bulk), and the top-k eigenvalues and the trace, with its standard error, over the
analysed steps of training.

A spectrum analysis reports, per step, `values["spectrum"]`: top_eigenvalues (descending),
trace, trace_stderr, density {x, y}, gradient_share (engine: worker/engine/geometry).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from webapp.figures.geometry import (
    chosen_step,
    finite,
    num,
    runs_subtitle,
    step_data,
    steps_of,
    title_layout,
)
from webapp.runsets import RunView
from webapp.style import base_layout, rgba, title_standoffs

HEIGHT = 420
DECADES = 8  # of density shown below its peak
MAX_STEP_TICKS = 10  # analysed steps that get a tick each


def spectrum_of(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """One step's spectrum values, or None when the step has none (yet)."""
    values = (data or {}).get("values") or {}
    s = values.get("spectrum")
    if isinstance(s, dict):
        return s
    return values if "top_eigenvalues" in values else None


def _title(head: str, items: Sequence[tuple[RunView, dict[str, Any]]]) -> dict[str, Any]:
    return title_layout(f"{head}<br><sup>{runs_subtitle(items)}</sup>")


def step_ticks(steps: Sequence[int]) -> dict[str, Any]:
    """A step axis's ticks: at the analysed steps themselves when there are few of them (one
    step alone got ticks at 799.5 and 800.5 from plotly's automatic ones); plotly's own for
    many, where its spacing is a whole number of steps anyway."""
    have = sorted(set(steps))
    if not have or len(have) > MAX_STEP_TICKS:
        return {}
    return {"tickmode": "array", "tickvals": have, "ticktext": [f"{s:,}" for s in have]}


def _short(v: float | None) -> str:
    return f"{v:.4g}" if finite(v) else "—"


def density_figure(items: Sequence[tuple[RunView, dict[str, Any]]], step: int | None
                   ) -> go.Figure:
    """The SLQ eigenvalue density of each run at `step`, overlaid, on a log y axis: a
    density that is zero or not finite somewhere is a gap there (a log axis has no 0)."""
    data = []
    for run, analysis in items:
        at = chosen_step(analysis, step)
        spec = spectrum_of(step_data(analysis, step))
        if spec is None:
            continue
        dens = spec.get("density") or {}
        xs = [num(v) for v in dens.get("x") or []]
        ys = [num(v) for v in dens.get("y") or []]
        ys = [y if finite(y) and y > 0 else None for y in ys]  # type: ignore[operator]
        tops = [num(v) for v in spec.get("top_eigenvalues") or []]
        name = (f"{run.label} · step {at} · λ₁ {_short(tops[0] if tops else None)}"
                f" · tr {_short(num(spec.get('trace')))}")
        data.append({"type": "scatter", "mode": "lines", "x": xs, "y": ys, "name": name,
                     "connectgaps": False,
                     "line": {"color": run.color, "dash": run.dash, "width": 2},
                     "fill": "tozeroy", "fillcolor": rgba(run.color, 0.08),
                     "hovertemplate": "λ %{x:.4g}: density %{y:.3g}<extra>" + run.label
                                      + "</extra>"})
    yaxis: dict[str, Any] = {"title": {"text": "density (log scale)"}, "type": "log",
                             "exponentformat": "power"}
    peak = max((y for t in data for y in t["y"] if y is not None), default=None)
    if peak is not None:
        # The Gaussian broadening's tails fall to 1e-30 and below: show DECADES decades
        # under the highest peak, where outliers and bulk are told apart.
        top = math.log10(peak)
        yaxis["range"] = [top - DECADES, top + 0.3]
    layout = base_layout(HEIGHT, title=_title("Hessian eigenvalue density (SLQ)", items),
                         xaxis={"title": {"text": "eigenvalue λ"}}, yaxis=yaxis)
    layout["margin"] = {**layout["margin"], "t": 100}
    layout["legend"] = {**layout["legend"], "y": 1.0, "yanchor": "bottom"}
    return go.Figure({"data": data, "layout": title_standoffs(layout)})


def spectrum_over_training(items: Sequence[tuple[RunView, dict[str, Any]]]) -> go.Figure:
    """Left: each run's top-k eigenvalues against the analysed step (λ₁ bold, the others
    thin); right: the Hutchinson trace with its standard error as error bars."""
    data = []
    drawn: list[int] = []
    for run, analysis in items:
        steps, tops, traces, errs, shares = [], [], [], [], []
        for s in steps_of(analysis):
            spec = spectrum_of(analysis["steps"][str(s)])
            if spec is None:
                continue
            steps.append(s)
            tops.append([num(v) for v in spec.get("top_eigenvalues") or []])
            traces.append(num(spec.get("trace")))
            errs.append(num(spec.get("trace_stderr")))
            shares.append(num(spec.get("gradient_share")))
        drawn.extend(steps)
        k = max((len(t) for t in tops), default=0)
        for i in range(k):
            ys = [t[i] if i < len(t) and finite(t[i]) else None for t in tops]
            data.append({"type": "scatter", "mode": "lines+markers", "x": steps, "y": ys,
                         "name": f"{run.label}: λ{i + 1}", "legendgroup": str(run.id),
                         "showlegend": i == 0, "connectgaps": False,
                         "line": {"color": run.color, "width": 2.5 if i == 0 else 1,
                                  "dash": run.dash},
                         "marker": {"size": 6 if i == 0 else 4, "color": run.color},
                         "hovertemplate": f"step %{{x}}: λ{i + 1} %{{y:.4g}}<extra>"
                                          f"{run.label}</extra>",
                         "xaxis": "x", "yaxis": "y"})
        text = [f"gradient share in top-{k}: {_short(sh)}" for sh in shares]
        data.append({"type": "scatter", "mode": "lines+markers", "x": steps,
                     "y": [t if finite(t) else None for t in traces], "text": text,
                     "error_y": {"type": "data", "visible": True,
                                 "array": [e if finite(e) else 0.0 for e in errs],
                                 "color": run.color, "thickness": 1.2},
                     "name": f"{run.label}: trace", "legendgroup": str(run.id),
                     "showlegend": False, "connectgaps": False,
                     "line": {"color": run.color, "dash": run.dash, "width": 2},
                     "marker": {"color": run.color, "size": 6, "symbol": "square"},
                     "hovertemplate": "step %{x}: trace %{y:.4g} ± %{error_y.array:.2g}"
                                      "<br>%{text}<extra>" + run.label + "</extra>",
                     "xaxis": "x2", "yaxis": "y2"})
    ticks = step_ticks(drawn)
    layout = base_layout(
        HEIGHT, title=_title("Top Hessian eigenvalues and trace over training", items),
        xaxis={"domain": [0, 0.45], "anchor": "y", "title": {"text": "step"}, **ticks},
        yaxis={"anchor": "x", "title": {"text": "top-k eigenvalues (Lanczos)"}},
        xaxis2={"domain": [0.55, 1], "anchor": "y2", "title": {"text": "step"}, **ticks},
        yaxis2={"anchor": "x2", "title": {"text": "trace (Hutchinson) ± s.e."}},
    )
    layout["margin"] = {**layout["margin"], "t": 100}
    layout["legend"] = {**layout["legend"], "y": 1.0, "yanchor": "bottom"}
    return go.Figure({"data": data, "layout": title_standoffs(layout)})


__all__ = ["density_figure", "spectrum_of", "spectrum_over_training"]
