"""Statistics the checks share: plain functions over one run's metric series.

Statistics ignore NaN; an infinite value counts (a diverged run's peak is infinite). A series
with nothing to summarise raises MissingData: the claim is then undecided, never wrong.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from server.reproduction.runs import MissingData

TAIL = 0.1  # "final" values: the median over the last 10 % of recorded steps
TIE = 0.01  # final losses within 1 % are the same level (a plateau), neither is "lower"


def peak(values: Sequence[float]) -> float:
    """The maximum, NaN ignored (+inf counts: a diverged run's peak is infinite)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        raise MissingData("no values that are not NaN")
    return max(vals)


def median(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        raise MissingData("no finite values")
    return statistics.median(vals)


def tail(values: Sequence[float], frac: float = TAIL) -> float:
    """The median of the last `frac` of the series: a final value that one step cannot swing."""
    n = max(1, math.ceil(len(values) * frac))
    return median(values[-n:])


def step_changes(values: Sequence[float]) -> list[float]:
    """|v_(t+1) - v_t| between consecutive recorded steps (Fig 8)."""
    return [abs(b - a) for a, b in zip(values, values[1:], strict=False)]


def ratio(a: float, b: float) -> float:
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


def fmt(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


def lower(a: float, b: float) -> bool:
    """a is lower than b by more than TIE (1 %): not the same level."""
    return a < b * (1 - TIE)


@dataclass(frozen=True)
class Spread:
    """One number of a claim over seeds: the median, the range and how many seeds gave it."""

    median: float
    lo: float
    hi: float
    n: int


def spread(values: Sequence[float]) -> Spread:
    """Median (the mean of the middle two for an even count) and range over seeds; NaN is
    ignored, an infinite value counts (a diverged seed's peak is infinite)."""
    vals = sorted(v for v in values if not math.isnan(v))
    if not vals:
        return Spread(math.nan, math.nan, math.nan, 0)
    mid = len(vals) // 2
    centre = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
    return Spread(centre, vals[0], vals[-1], len(vals))
