"""A figure's drawn data as CSV: what the reader sees, after grouping, smoothing and the choice
of x axis, one row per drawn point, for a spreadsheet or a paper's own plot.

    # <title>
    figure,trace,x,y,lo,hi

- Lines and markers (scatter): a row per point, x and y exactly as the trace draws them; an
  empty field where the trace has None (a gap in the line). lo/hi come from the trace's
  error bars (error_y), or from its customdata where `meta["customdata"]` names columns "lo"
  and "hi" (a seed group's centre line: webapp/figures/groups.py); otherwise empty.
- Filled areas are exported as drawn, not re-paired: a fill='tonexty' band is its two edge
  traces (lower, then upper), each with its own rows; a fill='toself' band is one closed
  polygon per stretch, its upper edge forwards then its lower edge with x backwards, and a row
  with empty x and y between stretches (where the drawing breaks).
- Grids (heatmap, contour, surface) and 3D points (scatter3d) in long form: a row per cell or
  point with its value in a `z` column, added after `hi` only when the figure has such a trace
  (so the first six columns are always the ones above).
- Hidden traces (visible false or "legendonly") and traces with nothing drawable (the legend
  keys of a figure, empty slots) are left out.

Numbers are written in Python's shortest exact form (float(field) gives the same float back);
non-finite ones as nan, inf, -inf. The figure dicts the pages send are already rounded to 7
significant digits (webapp/figures/common.py: compact), and so is this export of them.
"""

from __future__ import annotations

import array
import base64
import csv
import io
import math
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

HEADER = ["figure", "trace", "x", "y", "lo", "hi"]
GRIDS = frozenset({"heatmap", "contour", "surface", "heatmapgl"})
POINTS3D = frozenset({"scatter3d"})
Row = list[Any]  # figure, trace, x, y, lo, hi[, z]


def cell(v: Any) -> str:
    """One CSV field: empty for None, nan/inf/-inf for non-finite, exact shortest floats."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(float(v))  # a numpy float's repr names its type
    return str(v)


# plotly.py 6+ sends numpy arrays as typed-array specs {"dtype", "bdata", "shape"}, and a
# figure read back from the page (dcc.Graph's figure as State) holds them as sent.
_TYPECODES = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "f4": "f",
              "f8": "d"}


def _typed(v: Any) -> Any:
    """A typed-array spec decoded to (nested) lists; anything else as it is."""
    if not (isinstance(v, dict) and "bdata" in v and v.get("dtype") in _TYPECODES):
        return v.tolist() if hasattr(v, "tolist") else v
    a = array.array(_TYPECODES[v["dtype"]])
    a.frombytes(base64.b64decode(v["bdata"]))
    if sys.byteorder == "big":
        a.byteswap()  # plotly writes little-endian
    flat = a.tolist()
    shape = [int(d) for d in str(v.get("shape") or len(flat)).split(",")]
    if len(shape) == 2:
        return [flat[i * shape[1]:(i + 1) * shape[1]] for i in range(shape[0])]
    return flat


def _text(title: Any) -> str:
    """A layout title (a string or {"text": ...}) as one plain line."""
    if isinstance(title, dict):
        title = title.get("text")
    if not title:
        return ""
    text = re.sub(r"<br\s*/?>", " · ", str(title), flags=re.I)
    return " ".join(re.sub(r"<[^>]+>", "", text).split())


def _drawn(trace: dict[str, Any]) -> bool:
    return trace.get("visible", True) not in (False, "legendonly")


def _coords(trace: dict[str, Any], axis: str, n: int) -> list[Any]:
    """A trace's x or y, or plotly's default when absent: axis0 + i * d-axis (0, 1, 2, ...)."""
    values = trace.get(axis)
    if values is not None:
        return list(values)
    start, step = trace.get(f"{axis}0", 0), trace.get(f"d{axis}", 1)
    return [start + i * step for i in range(n)]


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool | str):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _error_bounds(trace: dict[str, Any], ys: list[Any]) -> tuple[list[Any], list[Any]] | None:
    err = trace.get("error_y")
    if not isinstance(err, dict) or not err or err.get("visible") is False:
        return None
    # plotly's defaults: type "data" when an array is given, else "percent"; value(minus) 10;
    # symmetric unless a separate minus side is given.
    kind = err.get("type") or ("data" if "array" in err else "percent")
    n = len(ys)
    symmetric = err.get("symmetric", "arrayminus" not in err and "valueminus" not in err)

    def arr(name: str) -> list[Any]:
        a = list(err.get(name) or [])
        return a + [None] * (n - len(a))

    def scaled(pct: Any) -> list[Any]:
        return [None if _num(y) is None else abs(_num(y)) * pct / 100 for y in ys]

    if kind == "data":
        plus = arr("array")
        minus = plus if symmetric else arr("arrayminus")
    elif kind == "constant":
        plus = [err.get("value", 10)] * n
        minus = plus if symmetric else [err.get("valueminus", 10)] * n
    elif kind == "percent":
        plus = scaled(err.get("value", 10))
        minus = plus if symmetric else scaled(err.get("valueminus", 10))
    elif kind == "sqrt":
        plus = [None if _num(y) is None or _num(y) < 0 else math.sqrt(_num(y)) for y in ys]
        minus = plus
    else:
        return None
    lo, hi = [], []
    for y, m, p in zip(ys, minus, plus, strict=True):
        yv, mv, pv = _num(y), _num(m), _num(p)
        lo.append(None if yv is None or mv is None else yv - mv)
        hi.append(None if yv is None or pv is None else yv + pv)
    return lo, hi


def _custom_bounds(trace: dict[str, Any], n: int) -> tuple[list[Any], list[Any]] | None:
    meta = trace.get("meta")
    names = meta.get("customdata") if isinstance(meta, dict) else None
    data = trace.get("customdata")
    if not names or data is None or "lo" not in names or "hi" not in names:
        return None
    i, j = names.index("lo"), names.index("hi")

    def pick(row: Any, k: int) -> Any:
        return row[k] if isinstance(row, list | tuple) and k < len(row) else None

    rows = list(data) + [None] * (n - len(data))
    return [pick(r, i) for r in rows[:n]], [pick(r, j) for r in rows[:n]]


def _scatter_rows(trace: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    xs_given, ys_given = trace.get("x"), trace.get("y")
    n = max(len(xs_given or []), len(ys_given or []))
    xs, ys = _coords(trace, "x", n), _coords(trace, "y", n)
    xs += [None] * (n - len(xs))
    ys += [None] * (n - len(ys))
    bounds = _error_bounds(trace, ys) or _custom_bounds(trace, n)
    lo, hi = bounds if bounds else ([None] * n, [None] * n)
    yield from zip(xs, ys, lo, hi, strict=True)


def _pick2(a: list[Any], i: int, j: int, along_x: bool) -> Any:
    """Coordinate of grid cell (row i, column j) from a 1D axis or a 2D (surface) array."""
    if a and isinstance(a[0], list | tuple):
        return a[i][j] if i < len(a) and j < len(a[i]) else None
    k = j if along_x else i
    return a[k] if k < len(a) else None


def _grid_rows(trace: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    z = list(trace.get("z") or [])
    if z and not isinstance(z[0], list | tuple):  # 1D z: one value per (x, y) point
        xs, ys = _coords(trace, "x", len(z)), _coords(trace, "y", len(z))
        for k, v in enumerate(z):
            yield (xs[k] if k < len(xs) else None, ys[k] if k < len(ys) else None, v)
        return
    if trace.get("transpose"):
        z = [list(col) for col in zip(*z, strict=False)]
    ny = len(z)
    nx = max((len(r) for r in z), default=0)
    xs, ys = _coords(trace, "x", nx), _coords(trace, "y", ny)
    for i, row in enumerate(z):
        for j, v in enumerate(row):
            yield (_pick2(xs, i, j, True), _pick2(ys, i, j, False), v)


def _points3d_rows(trace: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    xs, ys, zs = (list(trace.get(a) or []) for a in "xyz")
    n = max(len(xs), len(ys), len(zs))
    for k in range(n):
        yield tuple(a[k] if k < len(a) else None for a in (xs, ys, zs))


def trace_rows(trace: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(x, y, lo, hi, z) of every drawn point of one trace ([] when it draws nothing)."""
    # Numpy arrays (a go.Figure's to_dict()) and typed-array specs: plain lists from here on.
    trace = {k: _typed(v) for k, v in trace.items()}
    if isinstance(trace.get("error_y"), dict):
        trace["error_y"] = {k: _typed(v) for k, v in trace["error_y"].items()}
    kind = trace.get("type", "scatter")
    if kind in GRIDS:
        rows = [(x, y, None, None, z) for x, y, z in _grid_rows(trace)]
        has_data = any(r[4] is not None for r in rows)
    elif kind in POINTS3D:
        rows = [(x, y, None, None, z) for x, y, z in _points3d_rows(trace)]
        has_data = any(None not in (r[0], r[1], r[4]) for r in rows)
    else:
        rows = [(x, y, lo, hi, None) for x, y, lo, hi in _scatter_rows(trace)]
        has_data = any(r[0] is not None and r[1] is not None for r in rows)
    return rows if has_data else []


def _labels(traces: Sequence[tuple[int, dict[str, Any]]], layout: dict[str, Any]) -> list[str]:
    """A distinct name per exported trace: its name; where names repeat (the same run in two
    panels), the panel's y axis title after it; where they still repeat, the trace index."""
    def axis_title(t: dict[str, Any]) -> str:
        ref = str(t.get("yaxis", "y"))
        return _text((layout.get("yaxis" + ref[1:]) or {}).get("title"))

    names = [str(t.get("name") or f"trace {i}") for i, t in traces]
    seen = Counter(names)
    names = [f"{name} · {axis_title(t)}" if seen[name] > 1 and axis_title(t) else name
             for name, (_, t) in zip(names, traces, strict=True)]
    seen = Counter(names)
    return [f"{name} [{i}]" if seen[name] > 1 else name
            for name, (i, _) in zip(names, traces, strict=True)]


def figure_csv(figure: dict[str, Any], *, name: str | None = None) -> str:
    """Every drawn trace of a plotly figure dict as long CSV (see the module docstring).

    `name` (keyword-only, beyond the contract): the `figure` column and the comment line when
    the layout has no title (default: the title, else "figure")."""
    layout = figure.get("layout") or {}
    title = _text(layout.get("title"))
    label = name or title or "figure"
    data = [(i, t) for i, t in enumerate(figure.get("data") or []) if _drawn(t)]
    rows = [(i, trace_rows(t)) for i, t in data]
    kept = [(i, t) for (i, t), (_, r) in zip(data, rows, strict=True) if r]
    rows = [(i, r) for i, r in rows if r]
    with_z = any(t.get("type", "scatter") in GRIDS | POINTS3D for _, t in kept)
    out = io.StringIO()
    out.write(f"# {title or label}\n")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HEADER + (["z"] if with_z else []))
    for trace_label, (_, trace_rows_) in zip(_labels(kept, layout), rows, strict=True):
        for x, y, lo, hi, z in trace_rows_:
            w.writerow([label, trace_label, cell(x), cell(y), cell(lo), cell(hi)]
                       + ([cell(z)] if with_z else []))
    return out.getvalue()


__all__ = ["HEADER", "cell", "figure_csv", "trace_rows"]
