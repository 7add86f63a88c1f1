"""Smoothing of a drawn curve: TensorBoard's debiased exponential moving average, made aware of
the spacing of x so that a sparse stretch is not smoothed like a dense one.

TensorBoard (vz_line_chart2/line-chart.ts, resmoothDataset; the newer line_chart_v2's
classicSmoothing is the same filter) runs, over the finite points only,

    last = last * w + (1 - w) * y_k;   smoothed_k = last / (1 - w^k)

which is the weighted mean of the finite points so far with weight w^(k-i) for the i-th: the
division by 1 - w^k removes the pull towards the 0 the filter starts from, so the first point
is itself and a constant series stays constant. Here the exponent counts x distance instead
of points: point i weighs w^((x_k - x_i) / u) with u the typical spacing of the series: the
median of the positive x distances between its consecutive finite points (the median, so one
long gap does not stretch the unit of everything else). On an evenly spaced series (every
step, or the server's equal-width buckets) that is exactly TensorBoard's filter; where points
are sparse (a gap, a stretch logged less often) the older ones fade by the distance actually
covered, as W&B's time-weighted EMA does. Scaling or shifting x (step,
epoch, samples: all linear in the step) changes nothing.

Non-finite values are data elsewhere (a gap and a marker); here they are skipped: they stay
None at their x and neither enter nor reset the average, so one NaN does not poison what
follows (the decay still covers the x distance across them).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _finite(v: object) -> bool:
    if v is None or isinstance(v, str):
        return False
    try:
        return math.isfinite(v)  # type: ignore[arg-type]
    except TypeError:
        return False


def ema(x: Sequence[float], y: Sequence[float | None], weight: float) -> list[float | None]:
    """The smoothed y at every x: None where y (or x) is None or not finite.

    `weight` in [0, 1): 0 draws the data as it is; TensorBoard's slider default is 0.6, and
    0.99 averages over about a hundred typical spacings."""
    if not (isinstance(weight, int | float) and 0.0 <= weight < 1.0):
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    out: list[float | None] = [None] * len(y)
    points = [(i, float(xi), float(yi)) for i, (xi, yi) in enumerate(zip(x, y, strict=True))
              if _finite(xi) and _finite(yi)]
    if weight == 0.0 or not points:
        for i, _, yi in points:
            out[i] = yi
        return out
    first = points[0][2]
    if all(yi == first for _, _, yi in points):
        # TensorBoard #786: a constant drawn exactly constant, not c * d / d off in the last bit.
        for i, _, _ in points:
            out[i] = first
        return out
    gaps = [b[1] - a[1] for a, b in zip(points, points[1:], strict=False) if b[1] > a[1]]
    unit = statistics.median(gaps) if gaps else 1.0
    num = den = 0.0
    prev: float | None = None
    for i, xi, yi in points:
        # x going backwards (it should not) counts as no distance rather than growth.
        decay = 1.0 if prev is None else weight ** (max(xi - prev, 0.0) / unit)
        num = num * decay + yi
        den = den * decay + 1.0
        out[i] = num / den
        prev = xi
    return out


__all__ = ["ema"]
