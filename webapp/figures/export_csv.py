"""TEMPORARY (h2-compare): a stand-in for contract B's CSV export until h3-figmath's branch
lands; h3-figmath's module REPLACES this file at merge."""

from __future__ import annotations

import csv
import io
import math
from typing import Any


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return repr(v) if isinstance(v, float) else str(v)


def figure_csv(figure: dict[str, Any]) -> str:
    layout = figure.get("layout") or {}
    title = (layout.get("title") or {}).get("text", "") if isinstance(
        layout.get("title"), dict) else layout.get("title") or ""
    buf = io.StringIO()
    buf.write(f"# {title}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["figure", "trace", "x", "y", "lo", "hi"])
    for t in figure.get("data") or []:
        xs, ys = t.get("x") or [], t.get("y") or []
        if t.get("type", "scatter") != "scatter":
            continue
        for x, y in zip(xs, ys, strict=False):
            w.writerow([title, t.get("name", ""), _cell(x), _cell(y), "", ""])
    return buf.getvalue()
