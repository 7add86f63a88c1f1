"""What the reader's view does to a built figure, after the figure builders (webapp/figures)
drew it by step: another x axis (epoch, samples seen, wall time), log x, the zoomed x range,
smoothing of the single runs' lines (the raw line stays, faint, beneath), and the single runs
drawn faintly under the groups.

Pure functions on figure dicts. Only a view at step, unsmoothed, is extended by live Patches
(update.py): anything here changes the trace list or the x values, so a live page with it on
is rebuilt on each poll instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from webapp.figures.axes import LOG_AXIS
from webapp.figures.smoothing import ema
from webapp.figures.xaxis import x_values

# Figures whose x axes are training steps (Fig 11's x is η, the heatmaps' y is the step).
STEP_FIGURES = ("training", "landscape", "gradpred", "beta", "ics", "dist_overlay",
                "sharpness", "dynamics")
X_TITLES = {"step": "training step", "epoch": "epoch", "samples": "samples seen",
            "wall": "wall time (s)"}
WALL_KEY = "time/wall_s"
RAW_OPACITY = 0.25
SINGLE_OPACITY = 0.3

XMap = Callable[[list[float]], list[float]]


@dataclass
class XAxis:
    """The x axis the page shows, and how each run's steps map onto it."""

    axis: str = "step"
    maps: dict[int, XMap] = field(default_factory=dict)
    notice: str = ""

    def of(self, run_id: int) -> XMap | None:
        return self.maps.get(run_id)


def resolve_x(axis: str, runs: list[dict[str, Any]],
              walls: dict[int, tuple[list[float], list[float]]] | None = None) -> XAxis:
    """The page's x axis: `axis` when every run has what it needs, else step, with a notice
    naming the runs that lack it (one axis for all: mixed units would mislead)."""
    if axis == "step":
        return XAxis()
    walls = walls or {}
    lacking = []
    for run in runs:
        probe = x_values([0.0, 1.0], axis, run, wall=walls.get(run["id"])) \
            if axis == "wall" else x_values([0.0, 1.0], axis, run)
        if probe is None:
            lacking.append(run["id"])
    if lacking or not runs:
        need = {"epoch": "the batch and dataset sizes", "samples": "the batch size",
                "wall": f"a {WALL_KEY} series"}.get(axis, axis)
        ids = ", ".join(f"#{r}" for r in lacking)
        return XAxis(notice=f"x axis {X_TITLES.get(axis, axis)}: run {ids} recorded no "
                     f"{need}; showing training steps.")

    def mapper(run: dict[str, Any]) -> XMap:
        wall = walls.get(run["id"])

        def f(steps: list[float]) -> list[float]:
            if axis == "wall":
                return x_values(steps, axis, run, wall=wall) or list(steps)
            return x_values(steps, axis, run) or list(steps)
        return f

    return XAxis(axis, {r["id"]: mapper(r) for r in runs})


def _run_of(trace: dict[str, Any]) -> int | None:
    g = trace.get("legendgroup")
    return int(g) if isinstance(g, str) and g.isdigit() else None


def _map_x(xs: list[Any], f: XMap) -> list[Any]:
    idx = [i for i, v in enumerate(xs) if isinstance(v, int | float)]
    mapped = f([float(xs[i]) for i in idx]) if idx else []
    out = list(xs)
    for i, v in zip(idx, mapped, strict=True):
        out[i] = v
    return out


def _is_line(t: dict[str, Any]) -> bool:
    """A run's measured line (not an envelope edge, a fill, a marker trace or a key)."""
    return ("lines" in str(t.get("mode", "")) and "fill" not in t
            and not str(t.get("name", "")).endswith(("(lower edge)", "(lower)"))
            and t.get("hoverinfo") != "skip" and bool(t.get("y")))


def smooth_traces(data: list[dict[str, Any]], weight: float) -> list[dict[str, Any]]:
    """Each single run's line smoothed, its raw line kept faint beneath; envelopes and
    bands are never smoothed."""
    if weight <= 0:
        return data
    out = []
    for t in data:
        if not (_is_line(t) and _run_of(t) is not None):
            out.append(t)
            continue
        raw = {**t, "name": f"{t.get('name', '')} (raw)", "showlegend": False,
               "opacity": RAW_OPACITY, "hoverinfo": "skip", "mode": "lines"}
        raw.pop("hovertemplate", None)
        out += [raw, {**t, "y": ema(list(t["x"]), list(t["y"]), weight)}]
    return out


def faint_singles(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The single runs' lines of a figure, to draw faintly beneath its groups."""
    return [{**t, "showlegend": False, "opacity": SINGLE_OPACITY, "hoverinfo": "skip",
             "mode": "lines", "name": f"{t.get('name', '')} (single run)"}
            for t in data if _is_line(t) and _run_of(t) is not None]


def x_axes(layout: dict[str, Any]) -> list[str]:
    return sorted(k for k in layout if k.startswith("xaxis"))


def apply_view(name: str, fig: dict[str, Any], *, x: XAxis, logx: bool = False,
               xrange: tuple[float, float] | None = None, smooth: float = 0.0,
               smooth_runs: bool = True) -> dict[str, Any]:
    """`fig` (a figure dict, changed in place and returned) as the view shows it."""
    if name not in STEP_FIGURES:
        return fig
    data = fig["data"]
    if x.axis != "step":
        for t in data:
            rid = _run_of(t)
            f = x.of(rid) if rid is not None else None
            if f is not None and t.get("x"):
                t["x"] = _map_x(t["x"], f)
        _map_shapes(fig["layout"], x)
    if smooth_runs:
        data = smooth_traces(data, smooth)
    fig["data"] = data
    layout = fig["layout"]
    layout["uirevision"] = f"{x.axis}-{int(logx)}"
    for ax in x_axes(layout):
        a = layout[ax]
        title = a.get("title") or {}
        if title.get("text") == X_TITLES["step"]:
            a["title"] = {**title, "text": X_TITLES[x.axis]}
        if logx:
            a.update(LOG_AXIS)  # the ticks every log axis has: readable at any span
        if xrange is not None:
            lo, hi = xrange
            if logx:
                lo, hi = (math.log10(v) if v > 0 else -1.0 for v in (lo, hi))
            a["range"] = [lo, hi]
            a["autorange"] = False
    return fig


def _map_shapes(layout: dict[str, Any], x: XAxis) -> None:
    """Divergence marks sit at a step: move them with the first run's mapping (runs that
    share an axis have the same batch and dataset sizes; wall time is approximate)."""
    f = next(iter(x.maps.values()), None)
    if f is None:
        return
    for shape in layout.get("shapes", []):
        if "domain" not in str(shape.get("xref", "")) and isinstance(shape.get("x0"),
                                                                     int | float):
            shape["x0"], shape["x1"] = f([float(shape["x0"]), float(shape["x1"])])
    for ann in layout.get("annotations", []):
        if str(ann.get("xref", "paper")) not in ("paper",) and "domain" not in str(
                ann.get("xref")) and isinstance(ann.get("x"), int | float):
            ann["x"] = f([float(ann["x"])])[0]


def interp_wall(series_steps: list[float], seconds: list[float]
                ) -> tuple[list[float], list[float]] | None:
    """A run's (steps, seconds) for the wall axis, finite points only; None when empty."""
    pts = [(s, v) for s, v in zip(series_steps, seconds, strict=False)
           if v is not None and math.isfinite(v)]
    if not pts:
        return None
    arr = np.asarray(pts, dtype=float)
    return list(arr[:, 0]), list(arr[:, 1])
