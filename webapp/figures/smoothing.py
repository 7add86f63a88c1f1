"""TEMPORARY (h2-compare): a stand-in for contract B's smoothing until h3-figmath's branch
lands; h3-figmath's module REPLACES this file at merge.

`ema`: a debiased exponential moving average whose decay follows the x spacing (a point
twice as far from the previous one decays the past twice as much)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def ema(x: Sequence[float], y: Sequence[float | None], weight: float) -> list[float | None]:
    if weight <= 0:
        return [v if v is not None and math.isfinite(v) else None for v in y]
    gaps = [b - a for a, b in zip(x, x[1:], strict=False) if b > a]
    unit = statistics.median(gaps) if gaps else 1.0
    num = den = 0.0
    prev: float | None = None
    out: list[float | None] = []
    for xi, yi in zip(x, y, strict=False):
        if yi is None or not math.isfinite(yi):
            out.append(None)
            continue
        w = weight if prev is None else weight ** max(0.0, (xi - prev) / unit)
        num = num * w + (1 - w) * yi
        den = den * w + (1 - w)
        prev = xi
        out.append(num / den)
    return out
