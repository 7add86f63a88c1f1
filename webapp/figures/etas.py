"""Paper Fig 11: gradient predictiveness d(eta) = ||grad L(w_t - eta g_t) - g_t|| against the
step size eta, one line per probed step t, coloured by t (early steps dark, late ones bright),
a panel per run. A curve that rises steeply with eta means the gradient stops predicting the
gradient a step away: the landscape is not smooth there.

Lines are grouped into a few colour bins of training progress (one trace each, segments
separated by gaps): a run probed every step would otherwise be thousands of traces. A run
probed more than MAX_LINES times draws every k-th probed step (k fixed by its schedule, so a
live page keeps the same choice): hundreds of overlapping lines show nothing more and cost
the browser most of a page load.
"""

from __future__ import annotations

import math
from itertools import groupby

from plotly.colors import sample_colorscale

from webapp.client import EtaRecord
from webapp.figures.axes import (
    LOG_AXIS,
    all_axes,
    cell_axes,
    grid_layout,
    grid_titles,
    scale,
)
from webapp.figures.common import (
    NONFINITE_SYMBOL,
    Arrays,
    Options,
    Slot,
    Spec,
    marker_trace,
    nonfinite_kind,
)
from webapp.runsets import Grid, RunView, grid_of

NAME = "etas"
MAX_LINES = 100
N_BINS = 8
SCALE = "Viridis"
BIN_COLORS = sample_colorscale(SCALE, [(b + 0.5) / N_BINS for b in range(N_BINS)])


def step_bin(step: int, total: int) -> int:
    return min(N_BINS - 1, max(0, int(N_BINS * step / max(1, total))))


def line_stride(run: RunView) -> int:
    """Draw every k-th probed step: k such that at most MAX_LINES lines are drawn."""
    return stride(run.landscape_every, run.total)


def stride(landscape_every: int, total: int) -> int:
    if landscape_every <= 0:
        return 1
    probed = -(-total // landscape_every)
    return max(1, -(-probed // MAX_LINES))


def drawn_every(landscape_every: int, total: int) -> int | None:
    """The steps drawn are the multiples of this (None: all); the compare view fetches only
    those records (GET /probes?every=), which the API sends with every non-finite one."""
    k = stride(landscape_every, total)
    return None if k == 1 else k * landscape_every


def drawn(step: int, run: RunView) -> bool:
    every = drawn_every(run.landscape_every, run.total)
    return every is None or step % every == 0


def segment_arrays(records: list[EtaRecord], run: RunView) -> list[Arrays]:
    """Per colour bin, every drawn probed step as one polyline over eta, joined by gaps."""
    out: list[Arrays] = [{"x": [], "y": []} for _ in range(N_BINS)]
    for step, recs in groupby(sorted(records, key=lambda r: (r.step, r.eta)), lambda r: r.step):
        if not drawn(step, run):
            continue
        arrays = out[step_bin(step, run.total)]
        for r in recs:
            arrays["x"].append(r.eta)
            arrays["y"].append(r.grad_dist if math.isfinite(r.grad_dist) else None)
        arrays["x"].append(None)
        arrays["y"].append(None)
    return out


def marker_arrays(records: list[EtaRecord]) -> Arrays:
    """Non-finite d(eta): a marker at that eta, at the largest finite d of the same step."""
    top: dict[int, float] = {}
    for r in records:
        if math.isfinite(r.grad_dist) and r.grad_dist > 0:
            top[r.step] = max(top.get(r.step, 0.0), r.grad_dist)
    bad = [r for r in records if not math.isfinite(r.grad_dist)]
    kinds = [nonfinite_kind(r.grad_dist) for r in bad]
    # A step with no finite d (or none fetched: thinned steps come with their non-finite
    # records only) puts its marker at 1. Nothing wider than the step itself may decide it,
    # or a live page's markers would differ from a rebuild's.
    return {"x": [r.eta for r in bad], "y": [top.get(r.step, 1.0) for r in bad],
            "marker.symbol": [NONFINITE_SYMBOL[k] for k in kinds],
            "text": [f"step {r.step}: {k.replace('nan', 'NaN')}"
                     for r, k in zip(bad, kinds, strict=True)]}


def spec(runs: list[RunView], opts: Options) -> Spec:
    grid = grid_of(runs) if runs else Grid(1, 1, [""])
    layout = grid_layout(grid, 300)
    total = max((r.total for r in runs), default=1)
    slots: list[Slot] = []
    for run in runs:
        axes = cell_axes(grid, run.row, run.col)
        for b in range(N_BINS):
            lo, hi = b * run.total // N_BINS, (b + 1) * run.total // N_BINS
            style = {"type": "scatter", "mode": "lines", "name": f"steps {lo}-{hi}",
                     "legendgroup": f"bin{b}", "showlegend": False, **axes,
                     "line": {"color": BIN_COLORS[b], "width": 1.2}, "opacity": 0.85,
                     "connectgaps": False,
                     "hovertemplate": "η %{x:.3g}<br>d(η) %{y:.4g}<br>" + f"steps {lo}-{hi}"
                                      + "<extra>" + run.label + "</extra>"}
            slots.append(Slot(style, lambda f, run=run, b=b: f.cached(
                ("etas", run.id), lambda: segment_arrays(f.etas.get(run.id, []), run))[b]))
        slots.append(Slot(marker_trace(run, axes),
                          lambda f, run=run: marker_arrays(f.etas.get(run.id, []))))
    slots.append(Slot(_colorbar(total), lambda _f: {}))
    grid_titles(layout, grid, "step size η", "d(η) = ‖∇L(w−ηg) − g‖₂")
    for ax in all_axes(layout, "x"):
        layout[ax].update(LOG_AXIS)  # eta spans 1e-8 .. 1
    log_axes = all_axes(layout, "y")
    for ax in log_axes:
        layout[ax].update(scale(NAME in opts.log))
    return Spec(slots, layout, log_axes)


def _colorbar(total: int) -> dict:
    """An invisible trace whose only job is the colour bar: which colour is which step."""
    return {"type": "scatter", "mode": "markers", "x": [None], "y": [None],
            "showlegend": False, "hoverinfo": "skip",
            "marker": {"color": [0], "colorscale": SCALE, "cmin": 0, "cmax": total,
                       "showscale": True,
                       "colorbar": {"title": {"text": "training step"}, "thickness": 12}}}
