"""What every figure builder shares: a figure is a fixed list of trace *slots*, each a static
style plus a function from new data to the arrays it appends. Building a figure feeds the
slots everything fetched so far; a live update feeds them only what arrived since and sends
the appended arrays as a dash.Patch. Both paths run the same code, so an extended figure
equals one built from all the data at once (tests/webapp/test_figures_incremental.py).

Non-finite values are data: a line gets a gap there (None) and a marker trace gets a point
at the last finite value (triangle up for +inf, down for -inf, an x for NaN), never a drop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from dash import Patch

from webapp.client import EtaRecord, Histogram, Series
from webapp.runsets import RunView
from webapp.style import rgba, title_standoffs

Arrays = dict[str, list]  # dotted trace attribute ("marker.symbol") -> values to append


@dataclass
class Frame:
    """Data for a figure: everything (to build) or what arrived since (to extend).
    `last` holds, per run and key, the last finite value already drawn: where a marker for a
    non-finite value at the start of a new chunk goes."""

    metrics: dict[int, dict[str, Series]] = field(default_factory=dict)
    etas: dict[int, list[EtaRecord]] = field(default_factory=dict)
    hists: dict[int, list[Histogram]] = field(default_factory=dict)
    last: dict[int, dict[str, float]] = field(default_factory=dict)
    memo: dict[tuple, Any] = field(default_factory=dict, repr=False)

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """Several slots draw from one computation (a line and its markers): do it once."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def series(self, run_id: int, key: str) -> Series:
        return self.metrics.get(run_id, {}).get(key) or Series(key)

    def last_value(self, run_id: int, key: str) -> float | None:
        return self.last.get(run_id, {}).get(key)


@dataclass(frozen=True)
class Options:
    """The reader's choices: facets or overlay for bands, which figures use a log y axis, a
    step range to zoom to, and which layer's activations to show."""

    arrange: str = "side"  # "side" (a column per normalisation) | "overlay"
    log: frozenset[str] = frozenset()
    step_range: tuple[int, int] | None = None
    layer: int = 1
    scope: str = "layer"


@dataclass
class Slot:
    trace: dict[str, Any]
    arrays: Callable[[Frame], Arrays]


@dataclass
class Spec:
    """A figure: its slots, its layout, and the y axes its log toggle switches."""

    slots: list[Slot]
    layout: dict[str, Any]
    log_axes: list[str] = field(default_factory=list)


def compact(values: Iterable[Any]) -> list[Any]:
    """Floats to 7 significant digits (about 9 characters of JSON instead of up to 18): far
    finer than a plot or its hover labels (4 digits) show, and half the bytes a page parses.
    Exact values stay available from the API and the CSV export. Nested lists (a heatmap's z)
    are compacted too; everything else is kept."""
    return [float(f"{v:.7g}") if type(v) is float else compact(v) if type(v) is list else v
            for v in values]


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    *head, leaf = path.split(".")
    for part in head:
        d = d.setdefault(part, {})
    d[leaf] = value


def figure_dict(spec: Spec, frame: Frame, *, final: bool = False) -> dict[str, Any]:
    """The figure as plain JSON-ready data, every slot filled from `frame`.

    `final`: no Patch will ever extend this figure (every run has finished), so slots left
    empty (no non-finite value to mark, no envelope on raw data) are left out: each trace
    costs the browser time to draw even when empty, and a finished page has hundreds."""
    data = []
    for slot in spec.slots:
        trace = _copy(slot.trace)
        arrays = slot.arrays(frame)
        if final and arrays and not any(arrays.values()):
            continue
        for path, values in arrays.items():
            _set(trace, path, compact(values))
        data.append(trace)
    return {"data": data, "layout": title_standoffs(_copy(spec.layout))}


def render(spec: Spec, frame: Frame) -> go.Figure:
    """The figure as a plotly Figure (for scripts and tests, which validate it). The live page
    sends `figure_dict` instead: building a Figure deep-copies every array, which costs more
    than everything else in a page load."""
    return go.Figure(figure_dict(spec, frame))


def patch(spec: Spec, frame: Frame) -> Patch | None:
    """A Patch appending what `frame` adds to each slot; None when it adds nothing."""
    p = Patch()
    changed = False
    for i, slot in enumerate(spec.slots):
        for path, values in slot.arrays(frame).items():
            if not values:
                continue
            target = p["data"][i]
            for part in path.split("."):
                target = target[part]
            target.extend(compact(values))
            changed = True
    return p if changed else None


def _copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in d.items()}


# -- non-finite values -------------------------------------------------------------------------

NONFINITE_SYMBOL = {"nan": "x", "+inf": "triangle-up", "-inf": "triangle-down"}


def nonfinite_kind(v: float) -> str:
    if math.isnan(v):
        return "nan"
    return "+inf" if v > 0 else "-inf"


def _first_finite(values: Iterable[float | None]) -> float | None:
    return next((v for v in values if v is not None and math.isfinite(v)), None)


def line_arrays(s: Series, last: float | None, *, what: str = "") -> tuple[Arrays, Arrays]:
    """(line arrays, marker arrays) of one series. The line has a gap (None) at each
    non-finite value; the marker sits at the last finite value before it (or the first after
    it when none came before), labelled with what it was. A downsampled bucket with
    non-finite points gets a marker saying how many."""
    x: list[float] = []
    y: list[float | None] = []
    mx: list[float] = []
    my: list[float] = []
    sym: list[str] = []
    text: list[str] = []
    anchor = last if last is not None else _first_finite(s.values)
    anchor = 1.0 if anchor is None else anchor
    bad = s.nonfinite or [0] * len(s.steps)
    for step, v, nbad in zip(s.steps, s.values, bad, strict=False):
        x.append(step)
        finite = math.isfinite(v)
        y.append(v if finite else None)
        if finite:
            anchor = v
        if not finite or nbad:
            kind = "nan" if s.buckets else nonfinite_kind(v)
            mx.append(step)
            my.append(anchor)
            sym.append(NONFINITE_SYMBOL[kind])
            text.append(f"{what} {nbad} non-finite in bucket" if s.buckets
                        else f"{what} {kind.replace('nan', 'NaN')}")
    return ({"x": x, "y": y},
            {"x": mx, "y": my, "marker.symbol": sym, "text": text})


def series_parts(frame: Frame, run_id: int, key: str, what: str = "") -> tuple[Arrays, Arrays]:
    """line_arrays of one run's key in `frame`, computed once for all the slots using it."""
    return frame.cached(("line", run_id, key), lambda: line_arrays(
        frame.series(run_id, key), frame.last_value(run_id, key), what=what or key))


def envelope_arrays(s: Series) -> tuple[Arrays, Arrays]:
    """Lower and upper edge of a downsampled series' min-max envelope (empty when raw)."""
    if not s.buckets or s.lo is None or s.hi is None:
        return {"x": [], "y": []}, {"x": [], "y": []}
    return {"x": list(s.steps), "y": list(s.lo)}, {"x": list(s.steps), "y": list(s.hi)}


def marker_trace(run: RunView, axes: dict[str, str], legend: bool = False) -> dict[str, Any]:
    return {
        "type": "scatter", "mode": "markers", "name": f"{run.label}: non-finite",
        "legendgroup": str(run.id), "showlegend": legend, **axes,
        "marker": {"color": run.color, "size": 10, "line": {"width": 1.5, "color": "white"}},
        "hovertemplate": "step %{x}: %{text}<extra>" + run.label + "</extra>",
        "cliponaxis": False,
    }


# A line with markers (a sparse measurement: test evaluations, sharpness) shows at most this
# many of them, evenly spread over what is in view: each marker is an SVG element, and 8 runs
# of 100 evaluations took the browser longer to draw than all the training lines.
MAX_MARKERS = 30


def line_trace(run: RunView, axes: dict[str, str], *, name: str | None = None,
               legend: bool = False, width: float = 1.8, dash: str | None = None,
               mode: str = "lines") -> dict[str, Any]:
    return {
        "type": "scatter", "mode": mode, "name": name or run.label,
        "legendgroup": str(run.id), "showlegend": legend, **axes,
        "line": {"color": run.color, "width": width, "dash": dash or run.dash},
        "marker": {"color": run.color, "size": 5, "maxdisplayed": MAX_MARKERS},
        "connectgaps": False,
        "hovertemplate": "step %{x}<br>%{y:.4g}<extra>" + run.label + "</extra>",
    }


def fill_pair(run: RunView, axes: dict[str, str], alpha: float, *, hover: bool = False,
              name: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Two traces whose area between is shaded: the lower edge, then the upper with
    fill='tonexty' (plotly fills to the trace right before it)."""
    edge = {"color": rgba(run.color, min(1.0, alpha * 2.5)), "width": 0.6}
    lower = {"type": "scatter", "mode": "lines", "name": f"{name or run.label} (lower edge)",
             "legendgroup": str(run.id),
             "showlegend": False, **axes, "line": edge, "connectgaps": False}
    if hover:
        lower["hovertemplate"] = "step %{x}<br>%{y:.4g}<extra>" + (name or run.label) + "</extra>"
    else:
        lower["hoverinfo"] = "skip"
    upper = {**lower, "name": name or run.label, "fill": "tonexty",
             "fillcolor": rgba(run.color, alpha)}
    return lower, upper
