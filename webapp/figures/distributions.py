"""Activation distributions over training (paper Fig 1c, 2, 6, 9) for one normalised layer
(or its fixed sampled unit), recorded where the paper records them: after the normalisation
(and noise), before the nonlinearity.

- Heatmaps, one per run side by side: x is the activation value, y the training step, colour
  the share of values in each fixed bin. Values outside the histogram range are the outer
  columns (below lo, above hi); non-finite values are x markers at the right edge.
- Overlay: every run's 5-95 % and 25-75 % quantile bands and median against the step, in
  the run's colour: how far each normalisation lets the distribution drift, on one axis.
"""

from __future__ import annotations

import math
from typing import Any

from webapp.client import Histogram
from webapp.figures.axes import (
    all_axes,
    apply_options,
    cell_axes,
    divergence_marks,
    grid_layout,
    grid_titles,
)
from webapp.figures.common import (
    Arrays,
    Frame,
    Options,
    Slot,
    Spec,
    fill_pair,
    marker_trace,
)
from webapp.runsets import Grid, RunView, grid_of
from webapp.style import base_layout

# A colour scale that spends its range on small shares: most bins of a wide distribution
# hold a few percent, and a linear scale would leave them all white.
COLORSCALE = [[0.0, "#ffffff"], [0.03, "#e8f0fa"], [0.12, "#a9c8ea"], [0.3, "#5b97d3"],
              [0.6, "#1f5fa8"], [1.0, "#08254f"]]


def what(opts: Options) -> str:
    return (f"whole layer {opts.layer}" if opts.scope == "layer"
            else f"sampled unit of layer {opts.layer}")


def bin_centres(run: RunView) -> list[float]:
    """x of every heatmap column: below-range, the bins, above-range."""
    lo, hi = run.act_range
    w = (hi - lo) / run.act_bins
    return [lo - w / 2] + [lo + (i + 0.5) * w for i in range(run.act_bins)] + [hi + w / 2]


def _shares(h: Histogram) -> list[float]:
    total = h.total or 1
    # 4 decimals is finer than any colour step and halves what the page downloads.
    return [round(c / total, 4) for c in [h.underflow, *h.counts, h.overflow]]


def heat_arrays(run: RunView, hists: list[Histogram]) -> tuple[Arrays, Arrays]:
    """(heatmap rows, non-finite markers) for the histograms of one run, in step order."""
    rows = [h for h in hists if len(h.counts) == run.act_bins]
    edge = run.act_range[1] + (run.act_range[1] - run.act_range[0]) / run.act_bins * 1.5
    bad = [h for h in rows if h.nonfinite]
    return (
        {"y": [h.step for h in rows], "z": [_shares(h) for h in rows]},
        {"x": [edge] * len(bad), "y": [h.step for h in bad],
         "marker.symbol": ["x"] * len(bad),
         "text": [f"{h.nonfinite} of {h.total} non-finite" for h in bad]},
    )


def heat_spec(runs: list[RunView], opts: Options) -> Spec:
    grid = grid_of(runs) if runs else Grid(1, 1, [""])
    layout = grid_layout(grid, 300)
    layout["coloraxis"] = {"colorscale": COLORSCALE, "cmin": 0,
                           "colorbar": {"title": {"text": "share"}, "tickformat": ".0%",
                                        "thickness": 12}}
    slots: list[Slot] = []
    for run in runs:
        axes = cell_axes(grid, run.row, run.col)
        heat = {
            "type": "heatmap", "name": run.label, "x": bin_centres(run), **axes,
            "coloraxis": "coloraxis", "hoverongaps": False,
            "hovertemplate": "step %{y}<br>activation ≈ %{x:.2f}<br>%{z:.2%} of values"
                             "<extra>" + run.label + "</extra>",
        }
        def parts(f: Frame, run: RunView = run) -> tuple[Arrays, Arrays]:
            return f.cached(("heat", run.id), lambda: heat_arrays(run, f.hists.get(run.id, [])))

        slots += [Slot(heat, lambda f, p=parts: p(f)[0]),
                  Slot(marker_trace(run, axes), lambda f, p=parts: p(f)[1])]
        _range_edges(layout, run, axes)
    grid_titles(layout, grid, f"activation, {what(opts)}", "training step")
    for ax in all_axes(layout, "y"):
        layout[ax]["showgrid"] = False  # grid lines would show through the empty rows
    _divergence_rows(runs, grid, layout)
    if opts.step_range is not None:
        for ax in all_axes(layout, "y"):
            layout[ax]["range"] = list(opts.step_range)
    return Spec(slots, layout, [])


def _range_edges(layout: dict[str, Any], run: RunView, axes: dict[str, str]) -> None:
    """Thin lines at the histogram range: what lies beyond them is out-of-range mass."""
    for v in run.act_range:
        layout["shapes"].append({
            "type": "line", "xref": axes["xaxis"], "yref": f"{axes['yaxis']} domain",
            "x0": v, "x1": v, "y0": 0, "y1": 1,
            "line": {"color": "#9aa0aa", "width": 0.8, "dash": "dot"},
        })


def _divergence_rows(runs: list[RunView], grid: Grid, layout: dict[str, Any]) -> None:
    for run in runs:
        if run.diverged_at is None:
            continue
        axes = cell_axes(grid, run.row, run.col)
        layout["shapes"].append({
            "type": "line", "xref": f"{axes['xaxis']} domain", "yref": axes["yaxis"],
            "x0": 0, "x1": 1, "y0": run.diverged_at, "y1": run.diverged_at,
            "line": {"color": run.color, "width": 1.5, "dash": "dot"},
        })


QUANTILE_BANDS = (("q05", "q95", 0.13), ("q25", "q75", 0.30))


def quantile_arrays(hists: list[Histogram], lo_q: str, hi_q: str) -> tuple[Arrays, Arrays]:
    def q(h: Histogram, name: str) -> float | None:
        v = h.quantiles.get(name)
        return v if v is not None and math.isfinite(v) else None

    steps = [h.step for h in hists]
    return ({"x": steps, "y": [q(h, lo_q) for h in hists]},
            {"x": list(steps), "y": [q(h, hi_q) for h in hists]})


def _median_marks(hists: list[Histogram]) -> Arrays:
    bad = [h for h in hists if h.nonfinite]
    y = [h.quantiles.get("q50") for h in bad]
    return {"x": [h.step for h in bad],
            "y": [v if v is not None and math.isfinite(v) else 0.0 for v in y],
            "marker.symbol": ["x"] * len(bad),
            "text": [f"{h.nonfinite} of {h.total} non-finite" for h in bad]}


def overlay_spec(runs: list[RunView], opts: Options) -> Spec:
    layout = base_layout(360)
    layout["xaxis"] = {"title": {"text": "training step"}}
    layout["yaxis"] = {"title": {"text": f"activation, {what(opts)}"}}
    axes = {"xaxis": "x", "yaxis": "y"}
    slots: list[Slot] = []
    # Shading adds up where runs overlap: fainter bands the more runs share the axis.
    fade = min(1.0, 2 / max(1, len(runs))) ** 0.5
    for run in runs:
        for lo_q, hi_q, alpha in QUANTILE_BANDS:
            lower, upper = fill_pair(run, axes, alpha * fade, hover=True,
                                     name=f"{run.label} {lo_q}-{hi_q}")
            slots += [
                Slot(lower, lambda f, run=run, a=lo_q, b=hi_q: quantile_arrays(
                    f.hists.get(run.id, []), a, b)[0]),
                Slot(upper, lambda f, run=run, a=lo_q, b=hi_q: quantile_arrays(
                    f.hists.get(run.id, []), a, b)[1]),
            ]
        median = {"type": "scatter", "mode": "lines", "name": run.label,
                  "legendgroup": str(run.id), "showlegend": True, **axes,
                  "line": {"color": run.color, "width": 2, "dash": run.dash},
                  "hovertemplate": "step %{x}<br>median %{y:.3g}<extra>" + run.label
                                   + "</extra>"}
        slots += [
            Slot(median, lambda f, run=run: {
                "x": [h.step for h in f.hists.get(run.id, [])],
                "y": quantile_arrays(f.hists.get(run.id, []), "q50", "q50")[0]["y"]}),
            Slot(marker_trace(run, axes), lambda f, run=run: _median_marks(
                f.hists.get(run.id, []))),
        ]
    divergence_marks(runs, lambda _r: [axes], layout)
    apply_options(layout, "dist_overlay", opts, [], ["xaxis"])
    return Spec(slots, layout, [])
