"""Axes of the figures: subplot grids (a column per normalisation, shared axes), the reader's
options applied to them (log y, a step range), how every log axis is ticked and labelled, and
the marks where runs diverged."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dash import Patch

from webapp.runsets import Grid, RunView
from webapp.style import base_layout

if TYPE_CHECKING:
    from webapp.figures.common import Options

# Every log axis the dashboard draws. Left to itself plotly ticks an axis spanning one to two
# decades at every digit and labels each with the digit alone, in small type: on a plot 200
# px high 7, 8, 9 pile on each other, and a 5 below the 1 means 0.5. Allowed about three
# ticks (nticks), it ticks powers of ten over more than ~2 decades, 1-2-5 over one to two and
# plain linear steps within one: never every digit, and no two labels closer than a tenth of
# the axis. "~g" labels each tick with its value (0.5, 20, 1e-7), never a bare digit.
LOG_AXIS: dict[str, Any] = {"type": "log", "nticks": 3, "tickformat": "~g"}
# The same axis with log turned off again: plotly's own tick choices and labels.
LINEAR_AXIS: dict[str, Any] = {"type": "linear", "nticks": 0, "tickformat": ""}


def scale(log: bool) -> dict[str, Any]:
    """The axis attributes of a log (or linear) axis, to update an axis dict with."""
    return dict(LOG_AXIS if log else LINEAR_AXIS)


def axis_ref(index: int) -> tuple[str, str]:
    """('x3', 'y3') for the 3rd subplot of a grid (row-major, 1-based); ('x', 'y') for 1."""
    return ("x", "y") if index == 1 else (f"x{index}", f"y{index}")


def cell_axes(grid: Grid, row: int, col: int) -> dict[str, str]:
    x, y = axis_ref(row * grid.cols + col + 1)
    return {"xaxis": x, "yaxis": y}


def layout_name(ref: str) -> str:
    """'y3' -> 'yaxis3', 'x' -> 'xaxis'."""
    return ref[0] + "axis" + ref[1:]


def grid_layout(grid: Grid, height_per_row: int, *, titles: list[str] | None = None,
                share_y: bool | str = "all", **extra: Any) -> dict[str, Any]:
    """Subplots in a grid on our base layout, as make_subplots lays them out (row-major axis
    numbering, one shared step axis with labels on the bottom row) but built directly: the
    make_subplots figure costs more than the data of a live update. y is shared across the
    whole grid ("all"), within each row (True) or not at all (False)."""
    rows, cols = grid.rows, grid.cols
    hs, vs = min(0.06, 0.25 / cols), min(0.12, 0.35 / rows)
    w, h = (1 - hs * (cols - 1)) / cols, (1 - vs * (rows - 1)) / rows
    height = max(260, height_per_row * rows + 80)
    out = base_layout(height, **extra)
    # The subplot titles sit just above the plots: the legend goes a line higher.
    out["margin"] = {**out["margin"], "t": 78}
    out["legend"] = {**out["legend"], "y": 1 + 26 / (height - 130)}
    titles = grid.titles if titles is None else titles
    shared_x = axis_ref((rows - 1) * cols + 1)[0]  # the bottom-left cell's step axis
    for r in range(rows):
        for c in range(cols):
            n = r * cols + c + 1
            x, y = axis_ref(n)
            x0, y1 = c * (w + hs), 1 - r * (h + vs)
            xa: dict[str, Any] = {"domain": [x0, x0 + w], "anchor": y}
            if x != shared_x:
                xa["matches"] = shared_x
            if r < rows - 1:
                xa["showticklabels"] = False
            ya: dict[str, Any] = {"domain": [max(0.0, y1 - h), y1], "anchor": x}
            if share_y == "all" and n > 1:
                ya["matches"] = "y"
            elif share_y is True and c > 0:
                ya["matches"] = axis_ref(r * cols + 1)[1]
            if share_y and c > 0:
                ya["showticklabels"] = False
            out[layout_name(x)], out[layout_name(y)] = xa, ya
            if n <= len(titles) and titles[n - 1]:
                out["annotations"].append({
                    "text": titles[n - 1], "xref": "paper", "yref": "paper",
                    "x": x0 + w / 2, "y": y1, "xanchor": "center", "yanchor": "bottom",
                    "showarrow": False, "font": {"size": 12},
                })
    return out


def grid_titles(layout: dict[str, Any], grid: Grid, xtitle: str, ytitle: str) -> None:
    """Axis titles once per grid: x under the bottom row, y left of the middle row."""
    for r in range(grid.rows):
        ya = layout_name(axis_ref(r * grid.cols + 1)[1])
        layout.setdefault(ya, {})["title"] = {"text": ytitle if r == grid.rows // 2 else ""}
    for c in range(grid.cols):
        xa = layout_name(axis_ref((grid.rows - 1) * grid.cols + c + 1)[0])
        layout.setdefault(xa, {})["title"] = {"text": xtitle}


def all_axes(layout: dict[str, Any], letter: str) -> list[str]:
    return sorted(k for k in layout if k.startswith(f"{letter}axis"))


def apply_options(layout: dict[str, Any], name: str, opts: Options, log_axes: list[str],
                  step_axes: list[str]) -> None:
    """Log y where the reader asked for it, and the step range to zoom to."""
    for ax in log_axes:
        layout.setdefault(ax, {}).update(scale(name in opts.log))
    if opts.step_range is not None:
        for ax in step_axes:
            layout.setdefault(ax, {})["range"] = list(opts.step_range)
            layout[ax]["autorange"] = False


def log_patch(log_axes: list[str], on: bool) -> Patch:
    p = Patch()
    for ax in log_axes:
        for attr, value in scale(on).items():
            p["layout"][ax][attr] = value
    return p


def divergence_marks(runs: list[RunView], axes_of: Callable[[RunView], list[dict[str, str]]],
                     layout: dict[str, Any]) -> None:
    """A dotted vertical line, in the run's colour, where each diverged run diverged."""
    for run in runs:
        if run.diverged_at is None:
            continue
        for axes in axes_of(run):
            x, y = axes["xaxis"], axes["yaxis"]
            layout["shapes"].append({
                "type": "line", "xref": x, "yref": f"{y} domain", "x0": run.diverged_at,
                "x1": run.diverged_at, "y0": 0, "y1": 1,
                "line": {"color": run.color, "width": 1.5, "dash": "dot"},
            })
            layout["annotations"].append({
                "xref": x, "yref": f"{y} domain", "x": run.diverged_at, "y": 1,
                "yanchor": "top", "xanchor": "right", "showarrow": False,
                "text": f"diverged ✕ {run.diverged_at}", "textangle": -90,
                "font": {"size": 10, "color": run.color},
            })
