"""Traces of a seed group (runs that differ only in their seed): a centre line over a light
band, computed by the server per bucket across the group's runs (GET /groups/metrics).

- `group_traces`: one scalar key. The band is lo..hi (min-max, or mean -/+ std) and is never
  smoothed: an envelope smoothed is no longer the envelope of anything measured. With
  smoothing on, the centre is smoothed (webapp/figures/smoothing.py, along the x drawn) and
  the raw centre stays faint beneath it, as TensorBoard draws it.
- `band_traces`: a probe band (landscape/loss_min .. landscape/loss_max). Per run the band is
  min..max over eta; for the group, the band of the medians (centre of the min key to centre
  of the max key) drawn as the group's band, with a lighter envelope around it (lo of the min
  key to hi of the max key: the lowest minimum and highest maximum any seed reached).

Bands are single closed polygons (fill "toself": the upper edge left to right, then the lower
edge right to left), one per stretch of finite buckets with a None between stretches, so a
band is one trace that no reordering or hiding of other traces can re-pair. Non-finite values
are data: buckets where runs had only non-finite points get an x marker on the centre line
saying how many. Every trace of a group shares its `legendgroup`; only the centre (or the
median band) can show in the legend, so one click hides or shows the whole group.

The centre line carries `customdata` per point and names its columns in `meta["customdata"]`
("lo", "hi", "raw", "n"): the hover reads them, and the CSV export takes lo/hi from them
(webapp/figures/export_csv.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from webapp.figures.smoothing import ema
from webapp.style import rgba

if TYPE_CHECKING:
    from webapp.client import GroupSeries

BAND_ALPHA = 0.18  # the lo..hi band under a centre line
RAW_OPACITY = 0.3  # the unsmoothed centre beneath the smoothed one
ENVELOPE_ALPHA = 0.10  # a probe band's envelope over all seeds
MEDIAN_BAND_ALPHA = 0.32  # a probe band's band of the medians
CUSTOMDATA = ["lo", "hi", "raw", "n"]


def finite(v: Any) -> bool:
    return v is not None and not isinstance(v, str) and math.isfinite(v)


def _clean(values: Sequence[float | None] | None, n: int) -> list[float | None]:
    """`values` as a line draws them: None where missing or not finite, padded to n."""
    values = list(values or [])
    out: list[float | None] = [float(v) if finite(v) else None for v in values[:n]]
    return out + [None] * (n - len(out))


def polygon(x: Sequence[float | None], lo: Sequence[float | None],
            hi: Sequence[float | None]) -> tuple[list[float | None], list[float | None]]:
    """(x, y) of the closed shapes filling lo..hi: for each stretch of points where x, lo and
    hi are all finite, the upper edge forwards then the lower edge backwards; None between
    stretches (plotly closes each stretch of a fill='toself' trace on its own)."""
    px: list[float | None] = []
    py: list[float | None] = []
    run: list[tuple[float, float, float]] = []

    def close() -> None:
        if not run:
            return
        if px:
            px.append(None)
            py.append(None)
        px.extend([a for a, _, _ in run] + [a for a, _, _ in reversed(run)])
        py.extend([h for _, _, h in run] + [lw for _, lw, _ in reversed(run)])
        run.clear()

    for a, lw, h in zip(x, lo, hi, strict=False):
        if finite(a) and finite(lw) and finite(h):
            run.append((float(a), float(lw), float(h)))
        else:
            close()
    close()
    return px, py


def _axes(axes: dict[str, str] | None) -> dict[str, str]:
    return dict(axes) if axes else {"xaxis": "x", "yaxis": "y"}


def _fill(x: list[float | None], y: list[float | None], *, name: str, color: str, alpha: float,
          legendgroup: str, axes: dict[str, str], role: str) -> dict[str, Any]:
    return {"type": "scatter", "mode": "lines", "x": x, "y": y, "name": name,
            "fill": "toself", "fillcolor": rgba(color, alpha),
            "line": {"color": rgba(color, 0.0), "width": 0},
            "legendgroup": legendgroup, "showlegend": False, "hoverinfo": "skip",
            "meta": {"role": role}, **axes}


def _nonfinite_marks(x: Sequence[float | None], y: Sequence[float | None],
                     counts: Sequence[tuple[int, int]], *, name: str, color: str,
                     legendgroup: str, axes: dict[str, str], xlabel: str) -> dict[str, Any] | None:
    """An x marker at each bucket where some runs had only non-finite points, on the line at
    the last finite value before it (the first after it when none came before)."""
    anchor = next((v for v in y if v is not None), 1.0)
    mx: list[float] = []
    my: list[float] = []
    text: list[str] = []
    for a, v, (bad, good) in zip(x, y, counts, strict=False):
        if v is not None:
            anchor = v
        if bad and a is not None and finite(a):
            mx.append(a)
            my.append(anchor)
            text.append(f"{bad} of {bad + good} run{'s' if bad + good != 1 else ''} non-finite")
    if not mx:
        return None
    return {"type": "scatter", "mode": "markers", "x": mx, "y": my, "text": text,
            "name": f"{name}: non-finite", "legendgroup": legendgroup, "showlegend": False,
            "marker": {"color": color, "size": 10, "symbol": "x",
                       "line": {"width": 1.5, "color": "white"}},
            "hovertemplate": f"{xlabel} %{{x:.6g}}: %{{text}}<extra>{name}</extra>",
            "cliponaxis": False, "meta": {"role": "nonfinite"}, **axes}


def _ints(values: Sequence[int] | None, n: int) -> list[int]:
    values = list(values or [])[:n]
    return [int(v) if finite(v) else 0 for v in values] + [0] * (n - len(values))


def group_traces(gs: GroupSeries, *, x: Sequence[float] | None, name: str, color: str,
                 smooth: float = 0.0, legendgroup: str, showlegend: bool,
                 axes: dict[str, str] | None = None, dash: str = "solid",
                 center_label: str = "median", band_label: str = "min–max",
                 xlabel: str = "step") -> list[dict[str, Any]]:
    """The traces of one group's series, in drawing order: the band (lo..hi, fill toself),
    the raw centre (faint; only when `smooth` > 0), the centre line (smoothed when `smooth` >
    0), and an x-marker trace (only when some bucket had non-finite runs).

    `x`: the x of each of gs.steps (webapp/figures/xaxis.py; None: the steps). Keyword-only
    extras beyond the contract: `axes` ({"xaxis": "x2", "yaxis": "y2"} for a subplot), `dash`,
    and the words the hover uses: `center_label` ("median"/"mean"), `band_label`
    ("min–max"/"± std") and `xlabel` (the x axis's name)."""
    n = len(gs.steps)
    xs = _clean(gs.steps if x is None else x, n)
    center = _clean(gs.center, n)
    lo, hi = _clean(gs.lo, n), _clean(gs.hi, n)
    counts = _ints(gs.n, n)
    ax = _axes(axes)
    bx, by = polygon(xs, lo, hi)
    traces = [_fill(bx, by, name=f"{name} ({band_label})", color=color, alpha=BAND_ALPHA,
                    legendgroup=legendgroup, axes=ax, role="band")]
    smoothing = smooth > 0
    line = ema(xs, center, smooth) if smoothing else center
    if smoothing:
        traces.append({"type": "scatter", "mode": "lines", "x": xs, "y": center,
                       "name": f"{name} (raw)", "legendgroup": legendgroup,
                       "showlegend": False, "hoverinfo": "skip", "opacity": RAW_OPACITY,
                       "line": {"color": color, "width": 1, "dash": dash},
                       "connectgaps": False, "meta": {"role": "raw"}, **ax})
    what = f"{center_label}, smoothed" if smoothing else center_label
    raw_row = "<br>raw %{customdata[2]:.4g}" if smoothing else ""
    traces.append({
        "type": "scatter", "mode": "lines", "x": xs, "y": line, "name": name,
        "legendgroup": legendgroup, "showlegend": showlegend, "connectgaps": False,
        "line": {"color": color, "width": 2, "dash": dash},
        "customdata": [[a, b, c, k] for a, b, c, k in zip(lo, hi, center, counts, strict=True)],
        "meta": {"role": "center", "customdata": CUSTOMDATA},
        "hovertemplate": (f"{xlabel} %{{x:.6g}}<br>{what} %{{y:.4g}}{raw_row}"
                          f"<br>{band_label} %{{customdata[0]:.4g}} – %{{customdata[1]:.4g}}"
                          f"<br>runs %{{customdata[3]}}<extra>{name}</extra>"),
        **ax})
    bad = _ints(gs.nonfinite, n)
    marks = _nonfinite_marks(xs, line, list(zip(bad, counts, strict=True)), name=name,
                             color=color, legendgroup=legendgroup, axes=ax, xlabel=xlabel)
    if marks:
        traces.append(marks)
    return traces


def band_traces(lo: GroupSeries, hi: GroupSeries, *, x: Sequence[float] | None, name: str,
                color: str, legendgroup: str, showlegend: bool,
                axes: dict[str, str] | None = None, center_label: str = "median",
                xlabel: str = "step") -> list[dict[str, Any]]:
    """A group's probe band from the grouped series of its min key (`lo`) and max key (`hi`),
    in drawing order: the envelope (lo.lo .. hi.hi, light, no hover), the band of the centres
    (lo.center .. hi.center, in the legend, hover on its edges), and an x-marker trace when
    some bucket had non-finite runs. Neither is ever smoothed.

    `x`: the x of each of lo.steps (None: the steps); `hi` is paired with `lo` by step, so a
    bucket missing from either is a gap. Keyword-only extras: `axes`, `center_label`,
    `xlabel` (see group_traces)."""
    n = len(lo.steps)
    xs = _clean(lo.steps if x is None else x, n)
    at = {s: i for i, s in enumerate(hi.steps)}
    idx = [at.get(s) for s in lo.steps]

    def paired(values: Sequence[float | None] | None) -> list[float | None]:
        vals = _clean(values, len(hi.steps))
        return [None if i is None else vals[i] for i in idx]

    ax = _axes(axes)
    ex, ey = polygon(xs, _clean(lo.lo, n), paired(hi.hi))
    envelope = _fill(ex, ey, name=f"{name} (envelope over seeds)", color=color,
                     alpha=ENVELOPE_ALPHA, legendgroup=legendgroup, axes=ax, role="envelope")
    low, high = _clean(lo.center, n), paired(hi.center)
    mx, my = polygon(xs, low, high)
    # Each vertex says which edge it is on: a stretch is its upper edge forwards, then its
    # lower edge backwards, so the first half of every stretch is the upper edge.
    text: list[str | None] = []
    stretch: list[float] = []
    for v in [*mx, None]:
        if v is not None:
            stretch.append(v)
            continue
        k = len(stretch) // 2
        text += [f"{center_label} of the max"] * k + [f"{center_label} of the min"] * k
        if len(text) < len(mx):  # the None between two stretches
            text.append(None)
        stretch = []
    band = {**_fill(mx, my, name=name, color=color, alpha=MEDIAN_BAND_ALPHA,
                    legendgroup=legendgroup, axes=ax, role="band"),
            "showlegend": showlegend, "text": text, "hoveron": "points",
            "line": {"color": rgba(color, 0.8), "width": 0.6},
            "hovertemplate": f"{xlabel} %{{x:.6g}}<br>%{{text}} %{{y:.4g}}<extra>{name}</extra>"}
    del band["hoverinfo"]
    bad_hi = paired([float(v) for v in _ints(hi.nonfinite, len(hi.steps))])
    good_hi = paired([float(v) for v in _ints(hi.n, len(hi.steps))])
    bad = [max(a, int(b or 0)) for a, b in zip(_ints(lo.nonfinite, n), bad_hi, strict=True)]
    good = [min(a, int(b or 0)) for a, b in zip(_ints(lo.n, n), good_hi, strict=True)]
    marks = _nonfinite_marks(xs, low, list(zip(bad, good, strict=True)), name=name,
                             color=color, legendgroup=legendgroup, axes=ax, xlabel=xlabel)
    return [envelope, band, *([marks] if marks else [])]


__all__ = ["band_traces", "group_traces", "polygon"]
