"""TEMPORARY (h2-compare): a stand-in for contract B's group traces until h3-figmath's
branch lands; h3-figmath's module REPLACES this file at merge. The keyword-only extras (axes, dash,
and the hover's words) are h3-figmath's, beyond the contract."""

from __future__ import annotations

from typing import Any

from webapp.client import GroupSeries
from webapp.figures.smoothing import ema
from webapp.style import rgba


def _band(x, lo, hi, *, name, color, alpha, legendgroup) -> list[dict[str, Any]]:
    edge = {"color": rgba(color, min(1.0, alpha * 2)), "width": 0.5}
    lower = {"type": "scatter", "mode": "lines", "x": list(x), "y": list(lo),
             "name": f"{name} (lower)", "legendgroup": legendgroup, "showlegend": False,
             "line": edge, "hoverinfo": "skip", "connectgaps": False}
    upper = {**lower, "y": list(hi), "name": f"{name} (upper)", "fill": "tonexty",
             "fillcolor": rgba(color, alpha)}
    return [lower, upper]


def group_traces(gs: GroupSeries, *, x, name: str, color: str, smooth: float = 0.0,
                 legendgroup: str, showlegend: bool, axes: dict[str, str] | None = None,
                 dash: str = "solid", **_labels: str) -> list[dict[str, Any]]:
    out = _band(x, gs.lo, gs.hi, name=name, color=color, alpha=0.18, legendgroup=legendgroup)
    line = {"type": "scatter", "mode": "lines", "x": list(x), "y": list(gs.center),
            "name": name, "legendgroup": legendgroup, "showlegend": showlegend,
            "line": {"color": color, "width": 1.8}, "connectgaps": False}
    if smooth > 0:
        out.append({**line, "name": f"{name} (raw)", "showlegend": False, "opacity": 0.25,
                    "hoverinfo": "skip"})
        line["y"] = ema(list(x), gs.center, smooth)
    out.append(line)
    for t in out:
        t.update(axes or {})
        if "fill" not in t:
            t["line"] = {**t["line"], "dash": dash}
    return out


def band_traces(lo: GroupSeries, hi: GroupSeries, *, x, name: str, color: str,
                legendgroup: str, showlegend: bool, axes: dict[str, str] | None = None,
                **_labels: str) -> list[dict[str, Any]]:
    out = _band(x, lo.lo, hi.hi, name=f"{name} envelope", color=color, alpha=0.12,
                legendgroup=legendgroup)
    med = _band(x, lo.center, hi.center, name=name, color=color, alpha=0.4,
                legendgroup=legendgroup)
    med[1]["showlegend"] = showlegend
    med[1]["name"] = name
    for t in out + med:
        t.update(axes or {})
    return out + med
