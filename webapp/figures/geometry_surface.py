"""Landscape figures over a grid: per run a contour and a 3D surface on one shared colour
range (the caller computes it across runs: geometry.shared_range), 1D slices of several runs
overlaid, and the training trajectory drawn as a path on its PCA plane's contour.

Li et al. 2018 draw these per run, each on its own colour scale, which makes a flat landscape
and a sharp one look alike; here runs are compared on one scale (zmin/zmax and the contour
levels shared), with a log10 option for losses that span orders of magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from webapp.figures.geometry import (
    COLORSCALE,
    CONTOUR_LEVELS,
    METRIC_TEXT,
    Grid,
    bn_text,
    chosen_step,
    colorbar_title,
    finite,
    missing_count,
    nonfinite_marks,
    num,
    plot_z,
    run_text,
    runs_subtitle,
    step_data,
    title,
    title_layout,
    transform,
)
from webapp.runsets import RunView
from webapp.style import base_layout, title_standoffs

HEIGHT = 440
Range = tuple[float, float] | None


def _axis_names(analysis: dict[str, Any]) -> tuple[str, str]:
    kind = ((analysis.get("spec") or {}).get("directions") or {}).get("kind", "random")
    if kind == "interpolation":
        return "t (0 = θa, 1 = θb)", ""
    return "α (direction 1)", "β (direction 2)"


def _marks_trace(grid: Grid, what: str, z: float | None = None) -> dict[str, Any] | None:
    marks = nonfinite_marks(grid, what)
    if not marks["x"]:
        return None
    trace = {"mode": "markers", "x": marks["x"], "y": marks["y"], "text": marks["text"],
             "name": "non-finite", "showlegend": False,
             "marker": {"symbol": marks["symbol"], "size": 9, "color": "#d62728",
                        "line": {"width": 1, "color": "white"}},
             "hovertemplate": "(%{x:.3g}, %{y:.3g}): %{text}<extra></extra>"}
    if z is None:
        return {"type": "scatter", **trace}
    # On a 3D surface: at the floor of the colour range, where the surface has its hole.
    sym3d = ["x" if s == "x" else "diamond" for s in marks["symbol"]]
    return {"type": "scatter3d", **trace, "z": [z] * len(marks["x"]),
            "marker": {**trace["marker"], "symbol": sym3d, "size": 4}}


def _grid_or_why(analysis: dict[str, Any], step: int | None, metric: str
                 ) -> tuple[Grid | None, str]:
    """A 2D grid with at least one point stored, or why there is nothing to draw."""
    data = step_data(analysis, step)
    if data is not None and data.get("loss") is not None and data.get(metric) is None:
        return None, f"{METRIC_TEXT.get(metric, metric)} not measured by this analysis"
    grid = Grid.of(data, metric)
    if grid is None or grid.y is None or missing_count(grid) == _size(grid):
        return None, "no point computed yet"
    return grid, ""


def _size(grid: Grid) -> int:
    return sum(len(r) for r in grid.z)


def _notes(grid: Grid) -> str:
    missing = missing_count(grid)
    total = _size(grid)
    return f" · {total - missing}/{total} points computed" if missing else ""


def _empty(analysis: dict[str, Any], run: RunView, what: str, why: str, at: int | None
           ) -> go.Figure:
    """A figure that says why it has nothing to draw; its title names the step all the same
    (the slider's, where the others of the page are drawn)."""
    layout = base_layout(HEIGHT, title=title(what, run, analysis, at))
    layout["annotations"].append({"text": why, "showarrow": False, "xref": "paper",
                                  "yref": "paper", "x": 0.5, "y": 0.5})
    layout["xaxis"] = {"visible": False}
    layout["yaxis"] = {"visible": False}
    return go.Figure({"data": [], "layout": layout})


def contour_figure(analysis: dict[str, Any], run: RunView, step: int | None, zrange: Range, *,
                   log: bool = False, metric: str = "loss") -> go.Figure:
    """The grid of one run at one step as filled contours on the shared range `zrange`
    (transformed values: log10 under `log`). Gaps where a point is missing or not finite,
    and a marker at each non-finite point."""
    what = f"{METRIC_TEXT.get(metric, metric)} contour"
    at = chosen_step(analysis, step)
    grid, why = _grid_or_why(analysis, step, metric)
    if grid is None:
        return _empty(analysis, run, what, why, at)
    xname, yname = _axis_names(analysis)
    trace: dict[str, Any] = {
        "type": "contour", "x": grid.x, "y": grid.y, "z": plot_z(grid, log),
        "colorscale": COLORSCALE, "connectgaps": False, "name": run.label,
        "colorbar": {"title": {"text": colorbar_title(metric, log), "side": "right"},
                     "thickness": 14},
        "hovertemplate": f"{xname.split()[0]} %{{x:.3g}}<br>{yname.split()[0]} %{{y:.3g}}"
                         f"<br>{colorbar_title(metric, log)} %{{z:.4g}}<extra></extra>",
        "line": {"width": 0.5, "color": "rgba(255,255,255,0.5)"},
    }
    if zrange is not None:
        lo, hi = zrange
        trace.update(zauto=False, zmin=lo, zmax=hi, autocontour=False,
                     contours={"start": lo, "end": hi, "size": (hi - lo) / CONTOUR_LEVELS,
                               "coloring": "heatmap"})
    data = [trace]
    marks = _marks_trace(grid, METRIC_TEXT.get(metric, metric))
    if marks:
        data.append(marks)
    layout = base_layout(HEIGHT, title=title(what + _notes(grid), run, analysis, at),
                         xaxis={"title": {"text": xname}}, yaxis={"title": {"text": yname}},
                         showlegend=False)
    layout["margin"] = {**layout["margin"], "t": 70}
    return go.Figure({"data": data, "layout": title_standoffs(layout)})


def surface_figure(analysis: dict[str, Any], run: RunView, step: int | None, zrange: Range, *,
                   log: bool = False, metric: str = "loss",
                   camera: dict[str, Any] | None = None) -> go.Figure:
    """The same grid as a 3D surface: colours on the shared `zrange`, and the height axis
    fixed to it too, so two runs' surfaces are drawn to one scale. `camera`: the view every
    surface of the page shares (the tab keeps them in step)."""
    what = f"{METRIC_TEXT.get(metric, metric)} surface"
    at = chosen_step(analysis, step)
    grid, why = _grid_or_why(analysis, step, metric)
    if grid is None:
        return _empty(analysis, run, what, why, at)
    if not any(finite(v) for v in grid.values()):
        # WebGL has nothing to draw a surface from (plotly.js fails on an all-gap surface).
        return _empty(analysis, run, what, "no finite value to draw (see the contour)", at)
    xname, yname = _axis_names(analysis)
    ztitle = colorbar_title(metric, log)
    trace: dict[str, Any] = {
        "type": "surface", "x": grid.x, "y": grid.y, "z": plot_z(grid, log),
        "colorscale": COLORSCALE, "name": run.label,
        "colorbar": {"title": {"text": ztitle, "side": "right"}, "thickness": 14},
        "hovertemplate": f"%{{x:.3g}}, %{{y:.3g}}<br>{ztitle} %{{z:.4g}}<extra></extra>",
    }
    scene: dict[str, Any] = {  # 3D axis titles stay short: a long one is cut at the edge
        "xaxis": {"title": {"text": xname.split()[0]}},
        "yaxis": {"title": {"text": yname.split()[0] if yname else ""}},
        "zaxis": {"title": {"text": ztitle}}, "aspectmode": "cube",
    }
    if zrange is not None:
        lo, hi = zrange
        trace.update(cauto=False, cmin=lo, cmax=hi)
        scene["zaxis"]["range"] = [lo, hi]
    if camera:
        scene["camera"] = camera
    data = [trace]
    marks = _marks_trace(grid, METRIC_TEXT.get(metric, metric),
                         z=zrange[0] if zrange else 0.0)
    if marks:
        data.append(marks)
    layout = base_layout(HEIGHT, title=title(what + _notes(grid), run, analysis, at),
                         scene=scene, showlegend=False)
    layout["margin"] = {"l": 0, "r": 0, "t": 70, "b": 0}
    return go.Figure({"data": data, "layout": title_standoffs(layout)})


def _line(values: Sequence[float | None], log: bool) -> list[float | None]:
    return [transform(v, log) for v in values]


def slices_figure(items: Sequence[tuple[RunView, dict[str, Any]]], step: int | None, *,
                  log: bool = False, metric: str = "loss") -> go.Figure:
    """1D slices of several runs overlaid (one line per run, in its norm's colour), with a
    gap and a marker where a value is not finite. The title names every run's norm and BN
    mode and evaluation set; an interpolation's barrier is in its legend entry when the
    engine reported it."""
    data: list[dict[str, Any]] = []
    xname = "α"
    for run, analysis in items:
        grid = Grid.of(step_data(analysis, step), metric)
        if grid is None or not grid.z:
            continue
        xname = _axis_names(analysis)[0]
        ys = grid.z[0]
        at = chosen_step(analysis, step)
        name = f"{run.label} · {bn_text(analysis.get('bn_mode'))}"
        barrier = _barrier(analysis, at)
        if barrier is not None:
            name += f" · barrier {barrier:.4g}"
        data.append({"type": "scatter", "mode": "lines+markers", "x": grid.x,
                     "y": _line(ys, log), "name": name, "connectgaps": False,
                     "line": {"color": run.color, "dash": run.dash, "width": 2},
                     "marker": {"size": 4, "color": run.color},
                     "hovertemplate": f"{xname.split()[0]} %{{x:.3g}}: %{{y:.4g}}"
                                      f"<extra>{run.label} · step {at}</extra>"})
        anchor = next((v for v in _line(ys, log) if v is not None), 0.0)
        xs, my, sym, text = [], [], [], []
        for x, v in zip(grid.x, ys, strict=False):
            t = transform(v, log)
            if t is not None:
                anchor = t
            elif v is not None and not math.isfinite(v):
                xs.append(x)
                my.append(anchor)
                sym.append("x" if math.isnan(v) else "triangle-up" if v > 0
                           else "triangle-down")
                text.append("NaN" if math.isnan(v) else "+inf" if v > 0 else "-inf")
        if xs:
            data.append({"type": "scatter", "mode": "markers", "x": xs, "y": my,
                         "text": text, "name": f"{run.label}: non-finite", "showlegend": False,
                         "marker": {"symbol": sym, "size": 10, "color": run.color},
                         "hovertemplate": "%{x:.3g}: %{text}<extra></extra>"})
    ytitle = colorbar_title(metric, log)
    head = f"1D slices of the {METRIC_TEXT.get(metric, metric)}"
    layout = base_layout(HEIGHT, title=title_layout(f"{head}<br><sup>{runs_subtitle(items)}</sup>"),
                         xaxis={"title": {"text": xname}}, yaxis={"title": {"text": ytitle}})
    layout["margin"] = {**layout["margin"], "t": 96}
    layout["legend"] = {**layout["legend"], "y": 1.0, "yanchor": "bottom"}
    return go.Figure({"data": data, "layout": title_standoffs(layout)})


def _barrier(analysis: dict[str, Any], step: int | None) -> float | None:
    data = step_data(analysis, step) or {}
    values = data.get("values") or {}
    for holder in (values, values.get("endpoints") or {}, values.get("interpolation") or {}):
        if isinstance(holder, dict) and holder.get("barrier") is not None:
            b = num(holder["barrier"])
            return b if finite(b) else None
    return None


def bilinear(grid: Grid, a: float, b: float) -> float | None:
    """The grid's value at (a, b), interpolated between its four neighbours; None outside
    the grid or where a neighbour is missing or not finite. Exact on a plane."""
    if grid.y is None or len(grid.x) < 2 or len(grid.y) < 2:
        return None
    ix = _cell(grid.x, a)
    iy = _cell(grid.y, b)
    if ix is None or iy is None:
        return None
    corners = [grid.z[iy][ix], grid.z[iy][ix + 1], grid.z[iy + 1][ix], grid.z[iy + 1][ix + 1]]
    if not all(finite(c) for c in corners):
        return None
    tx = (a - grid.x[ix]) / (grid.x[ix + 1] - grid.x[ix])
    ty = (b - grid.y[iy]) / (grid.y[iy + 1] - grid.y[iy])
    z00, z10, z01, z11 = corners
    return ((1 - tx) * (1 - ty) * z00 + tx * (1 - ty) * z10  # type: ignore[operator]
            + (1 - tx) * ty * z01 + tx * ty * z11)  # type: ignore[operator]


def _cell(axis: list[float], v: float) -> int | None:
    if not (axis[0] <= v <= axis[-1]):
        return None
    for i in range(len(axis) - 1):
        if v <= axis[i + 1]:
            return i
    return len(axis) - 2


def trajectory_of(values: dict[str, Any]) -> dict[str, Any]:
    """The trajectory values as the engine reports them: `trajectory` with the snapshot
    steps, their coordinates on the plane (`coords` as [a, b] pairs, or `x` and `y`), the
    true loss at each (`loss`), the plane's value there (`surface_loss`, optional), and the
    explained variance of each axis (there or in `directions`)."""
    t = values.get("trajectory") or {}
    coords = t.get("coords")
    if coords is not None:
        xs = [num(c[0]) for c in coords]
        ys = [num(c[1]) if len(c) > 1 else 0.0 for c in coords]
    else:
        xs, ys = [num(v) for v in t.get("x") or []], [num(v) for v in t.get("y") or []]
    ev = t.get("explained_variance") or (values.get("directions") or {}).get(
        "explained_variance") or []
    return {"steps": list(t.get("steps") or range(len(xs))), "x": xs, "y": ys,
            "loss": [num(v) for v in t.get("loss") or [None] * len(xs)],
            "surface_loss": [num(v) for v in t.get("surface_loss") or []],
            "explained_variance": [num(v) for v in ev]}


def _pc_title(i: int, ev: list[float | None]) -> str:
    if i < len(ev) and finite(ev[i]):
        return f"PC{i + 1} ({100 * ev[i]:.1f} % of variance)"  # type: ignore[operator]
    return f"PC{i + 1}"


def trajectory_figure(analysis: dict[str, Any], run: RunView, zrange: Range, *,
                      log: bool = False) -> go.Figure:
    """The run's snapshots as a path with markers on the contour of its PCA plane (the
    trajectory analysis's grid at its step), each axis titled with its explained variance,
    the true loss at each snapshot beside the surface value there in the hover text."""
    at = chosen_step(analysis, None)
    data_at = step_data(analysis, None) or {}
    fig = contour_figure(analysis, run, None, zrange, log=log)
    traj = trajectory_of(data_at.get("values") or {})
    grid = Grid.of(data_at)
    text = []
    for i, (s, a, b, loss) in enumerate(zip(traj["steps"], traj["x"], traj["y"], traj["loss"],
                                            strict=False)):
        # The engine evaluates the plane at each snapshot; older results only have the grid
        # to interpolate.
        if i < len(traj["surface_loss"]):
            there = traj["surface_loss"][i]
        elif grid is not None and finite(a) and finite(b):
            there = bilinear(grid, a, b)
        else:
            there = None
        text.append(f"step {s}<br>true loss {_fmt(loss)}<br>surface there {_fmt(there)}")
    xs = [a if finite(a) else None for a in traj["x"]]
    ys = [b if finite(b) else None for b in traj["y"]]
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="lines+markers", text=text, name="trajectory",
        line={"color": "white", "width": 2}, connectgaps=False,
        marker={"size": 7, "color": run.color, "line": {"width": 1.5, "color": "white"}},
        hovertemplate="%{text}<extra>" + run.label + "</extra>"))
    ev = traj["explained_variance"]
    what = "Trajectory on its PCA plane"
    fig.update_layout(title=title(what, run, analysis, at),
                      xaxis_title_text=_pc_title(0, ev), yaxis_title_text=_pc_title(1, ev))
    return fig


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if math.isfinite(v):
        return f"{v:.4g}"
    return "NaN" if math.isnan(v) else ("+inf" if v > 0 else "-inf")


__all__ = ["bilinear", "contour_figure", "run_text", "slices_figure", "surface_figure",
           "trajectory_figure", "trajectory_of"]
