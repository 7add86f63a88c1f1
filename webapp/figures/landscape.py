"""The loss landscape along the gradient (paper Fig 4a, 10a), gradient predictiveness (Fig 4b,
10b) and effective beta-smoothness (Fig 4c, 10c).

At each probed step t the engine evaluates, for every eta in S = multipliers x LR,
l(eta) = L(w_t - eta g_t) and d(eta) = ||grad L(w_t - eta g_t) - g_t||. The band figures shade
[min, max] over S at each step: a narrow band is a smooth, predictable landscape. Side by
side (a column per normalisation, shared axes) or overlaid.
"""

from __future__ import annotations

import math

from webapp.client import Series
from webapp.figures.axes import (
    all_axes,
    apply_options,
    cell_axes,
    divergence_marks,
    grid_layout,
    grid_titles,
)
from webapp.figures.common import (
    NONFINITE_SYMBOL,
    Arrays,
    Frame,
    Options,
    Slot,
    Spec,
    fill_pair,
    line_trace,
    marker_trace,
    series_parts,
)
from webapp.runsets import Grid, RunView, grid_of
from webapp.style import base_layout

BANDS = {
    "landscape": ("landscape/loss_min", "landscape/loss_max", "loss l(η) over η ∈ S"),
    "gradpred": ("landscape/grad_dist_min", "landscape/grad_dist_max",
                 "‖∇L(w−ηg) − g‖₂ over η ∈ S"),
}
BETA = "landscape/beta"


def band_arrays(lo: Series, hi: Series, last: float | None) -> tuple[Arrays, Arrays, Arrays]:
    """(lower edge, upper edge, non-finite markers) of a band. Raw series pair up by step;
    downsampled ones use the bucket minimum of the lower series and maximum of the upper
    one, so the band stays the true envelope of what was measured."""
    uppers = dict(zip(hi.steps, hi.hi if hi.buckets and hi.hi else hi.values, strict=False))
    bad_hi = dict(zip(hi.steps, hi.nonfinite or [0] * len(hi.steps), strict=False))
    lows = lo.lo if lo.buckets and lo.lo else lo.values
    bad_lo = lo.nonfinite or [0] * len(lo.steps)
    x: list[float] = []
    ylo: list[float | None] = []
    yhi: list[float | None] = []
    mx: list[float] = []
    my: list[float] = []
    sym: list[str] = []
    text: list[str] = []
    anchor = last
    for step, a, nbad in zip(lo.steps, lows, bad_lo, strict=False):
        b = uppers.get(step, math.nan)
        a = math.nan if a is None else a
        b = math.nan if b is None else b
        x.append(step)
        ylo.append(a if math.isfinite(a) else None)
        yhi.append(b if math.isfinite(b) else None)
        if math.isfinite(a):
            anchor = a
        nonfinite = not (math.isfinite(a) and math.isfinite(b)) or nbad or bad_hi.get(step)
        if nonfinite:
            v = a if not math.isfinite(a) else b
            kind = "nan" if math.isnan(v) or lo.buckets else ("+inf" if v > 0 else "-inf")
            mx.append(step)
            my.append(anchor if anchor is not None else 1.0)
            sym.append(NONFINITE_SYMBOL[kind])
            text.append("non-finite in band" if lo.buckets else kind.replace("nan", "NaN"))
    return ({"x": x, "y": ylo}, {"x": list(x), "y": yhi},
            {"x": mx, "y": my, "marker.symbol": sym, "text": text})


def _band_slots(run: RunView, keys: tuple[str, str], axes: dict[str, str],
                alpha: float) -> list[Slot]:
    lo_key, hi_key = keys

    def arrays(frame: Frame, part: int) -> Arrays:
        return frame.cached(("band", run.id, lo_key), lambda: band_arrays(
            frame.series(run.id, lo_key), frame.series(run.id, hi_key),
            frame.last_value(run.id, lo_key)))[part]

    lower, upper = fill_pair(run, axes, alpha, hover=True, name=run.label)
    lower["hovertemplate"] = "step %{x}<br>min %{y:.4g}<extra>" + run.label + "</extra>"
    upper["hovertemplate"] = "step %{x}<br>max %{y:.4g}<extra>" + run.label + "</extra>"
    upper["name"] = run.label
    upper["showlegend"] = True
    return [
        Slot(lower, lambda f: arrays(f, 0)),
        Slot(upper, lambda f: arrays(f, 1)),
        Slot(marker_trace(run, axes), lambda f: arrays(f, 2)),
    ]


def band_spec(runs: list[RunView], opts: Options, which: str) -> Spec:
    lo_key, hi_key, ytitle = BANDS[which]
    side = opts.arrange == "side" and len(runs) > 1
    grid = grid_of(runs) if side else Grid(1, 1, [""])
    layout = grid_layout(grid, 300) if side else base_layout(340)
    slots: list[Slot] = []
    for run in runs:
        axes = cell_axes(grid, run.row, run.col) if side else {"xaxis": "x", "yaxis": "y"}
        slots += _band_slots(run, (lo_key, hi_key), axes, 0.35 if side else 0.22)
    grid_titles(layout, grid, "training step", ytitle)
    divergence_marks(runs, lambda r: [cell_axes(grid, r.row, r.col) if side
                                      else {"xaxis": "x", "yaxis": "y"}], layout)
    log_axes = all_axes(layout, "y") or ["yaxis"]
    apply_options(layout, which, opts, log_axes, all_axes(layout, "x") or ["xaxis"])
    return Spec(slots, layout, log_axes)


def beta_spec(runs: list[RunView], opts: Options) -> Spec:
    """Effective beta-smoothness max_eta d(eta) / (eta ||g||), every run overlaid."""
    layout = base_layout(320)
    layout["xaxis"] = {"title": {"text": "training step"}}
    layout["yaxis"] = {"title": {"text": "β = maxη ‖∇L(w−ηg) − g‖ / (η‖g‖)"}}
    axes = {"xaxis": "x", "yaxis": "y"}
    slots: list[Slot] = []
    for run in runs:
        def line(f: Frame, run=run):
            return series_parts(f, run.id, BETA, "β")[0]

        def marks(f: Frame, run=run):
            return series_parts(f, run.id, BETA, "β")[1]

        slots += [Slot(line_trace(run, axes, legend=True, mode="lines"), line),
                  Slot(marker_trace(run, axes), marks)]
    divergence_marks(runs, lambda _r: [axes], layout)
    apply_options(layout, "beta", opts, ["yaxis"], ["xaxis"])
    return Spec(slots, layout, ["yaxis"])
