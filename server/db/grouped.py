"""Grouped reads: for groups of runs (seeds of one setting), per metric key and step bucket,
the group's centre (median or mean) and band (min-max or +-std) across its runs, in ONE SQL
statement for every group and key of a request.

The bucket grid is shared by the whole request: equal-width buckets planned as
server/db/downsample.py plans them (plan_buckets) over the union of the series' step ranges,
or one bucket per step when the range spans at most max_points steps. A run's value in a
bucket is the mean of its finite points there, read from the rollups where the rollup bucket
lies wholly inside the range and from the raw points at the two edges, as downsample.py does.
Across the group's runs the statement then takes, per bucket:

- the middle one or two run values (row_number and count over the bucket's partition, NULLs
  last on both databases): the median is their mean;
- count, min, max and the sum of the run values (the mean is sum / count);
- the sum of squared deviations from the bucket's mean (for the std band: two passes through
  a window avg, stable where sum(v*v) - n*mean^2 cancels);
- how many runs had points in the bucket that were all non-finite.

PostgreSQL raises where IEEE arithmetic overflows or underflows, so there the sums go through
float_sums.total, a run's mean below 1e-322 in magnitude (a denormal, or 0, in IEEE) is
taken as 0 rather than divided, and the deviations are squared in numeric.
The final divisions and the square root are taken in Python (GroupedSeries.finish).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Connection, text

from server.db import float_sums
from server.db.downsample import _bucket_params, plan_buckets


@dataclass
class GroupedSeries:
    """One group's key: a bucket per entry. center/lo/hi are None where no run of the group
    had a finite value; n counts runs with a finite value, nonfinite runs whose points in the
    bucket were all NaN or infinite."""

    key: str
    steps: list[float] = field(default_factory=list)
    center: list[float | None] = field(default_factory=list)
    lo: list[float | None] = field(default_factory=list)
    hi: list[float | None] = field(default_factory=list)
    n: list[int] = field(default_factory=list)
    nonfinite: list[int] = field(default_factory=list)


def grid_width(first: int, last: int, max_points: int) -> int:
    """The bucket width of a request whose series span [first, last]: 1 (a bucket per step)
    when the span is at most max_points steps, else plan_buckets's."""
    return 1 if last - first + 1 <= max_points else plan_buckets(first, last, max_points)[1]


def _grid_params(first: int, last: int, lo: int, hi: int, max_points: int) -> dict[str, int]:
    """_BUCKETS's parameters (downsample.py) for the request's grid over [lo, hi]."""
    if last - first + 1 <= max_points:  # raw: every point read, a bucket per step
        return {"width": 1, "unit": 1, "level": 0, "lo": lo, "hi": hi, "a": hi + 1,
                "z": hi + 1, "ra": 0, "rz": 0}
    return _bucket_params(first, last, lo, hi, max_points)


# {total_vsum}/{total_v}: sums that must not raise on PostgreSQL (float_sums.total).
# {mean}: a run's mean from rsum over cnt finite points; {dev2}: (v - m)^2 for the std band.
_GROUPED = """
WITH p (g, k, sid) AS (VALUES {rows}),
parts AS (
 SELECT p.g, p.k, p.sid, m.step / :width AS b, m.step AS smin, m.step AS smax,
  m.value AS vsum, 1 AS n, CASE WHEN m.value IS NULL THEN 1 ELSE 0 END AS n_bad
 FROM p JOIN metric_points m ON m.series_id = p.sid AND m.step >= :lo AND m.step < :a
 UNION ALL
 SELECT p.g, p.k, p.sid, m.step / :width, m.step, m.step, m.value, 1,
  CASE WHEN m.value IS NULL THEN 1 ELSE 0 END
 FROM p JOIN metric_points m ON m.series_id = p.sid AND m.step >= :z AND m.step <= :hi
 UNION ALL
 SELECT p.g, p.k, p.sid, (r.bucket * :unit) / :width, r.step_min, r.step_max, r.vsum, r.n,
  r.n_bad
 FROM p JOIN metric_rollups r ON r.series_id = p.sid AND r.level = :level
  AND r.bucket >= :ra AND r.bucket < :rz
),
per_run AS (
 SELECT g, k, sid, b, min(smin) AS smin, max(smax) AS smax, sum(n) - sum(n_bad) AS cnt,
  {total_vsum} AS rsum
 FROM parts GROUP BY g, k, sid, b
),
vals AS (
 SELECT g, k, b, smin, smax, CASE WHEN cnt > 0 THEN {mean} END AS v,
  CASE WHEN cnt = 0 THEN 1 ELSE 0 END AS bad
 FROM per_run
),
ranked AS (
 SELECT g, k, b, smin, smax, v, bad,
  row_number() OVER (PARTITION BY g, k, b ORDER BY CASE WHEN v IS NULL THEN 1 ELSE 0 END, v)
   AS rn,
  count(v) OVER (PARTITION BY g, k, b) AS c,
  avg({finite_v}) OVER (PARTITION BY g, k, b) AS m
 FROM vals
)
SELECT g, k, b, min(smin), max(smax), count(v), sum(bad), min(v), max(v), {total_v},
 min(CASE WHEN v IS NOT NULL AND rn IN ((c + 1) / 2, (c + 2) / 2) THEN v END),
 max(CASE WHEN v IS NOT NULL AND rn IN ((c + 1) / 2, (c + 2) / 2) THEN v END),
 sum({dev2})
FROM ranked GROUP BY g, k, b ORDER BY g, k, b
"""

_DIALECT = {
    "sqlite": {
        "total_vsum": "sum(vsum)", "total_v": "sum(v)", "mean": "rsum / cnt",
        "finite_v": "CASE WHEN abs(v) < 9e999 THEN v END",
        "dev2": "CASE WHEN abs(v) < 9e999 THEN (v - m) * (v - m) END",
    },
    "postgresql": {
        "total_vsum": float_sums.total("vsum"), "total_v": float_sums.total("v"),
        # PostgreSQL raises "underflow" where IEEE rounds a quotient to 0: a mean below
        # 1e-322 (0 or a denormal in IEEE) is taken as 0; a single point as it is.
        "mean": "CASE WHEN cnt = 1 THEN rsum WHEN abs(rsum) < cnt * 1e-322::float8 "
                "THEN 0.0::float8 ELSE rsum / cnt END",
        # numeric: exact squares that never overflow or underflow (infinite values left out)
        "finite_v": "CASE WHEN abs(v) < 'Infinity'::float8 THEN v::numeric END",
        "dev2": "CASE WHEN abs(v) < 'Infinity'::float8 THEN (v::numeric - m) * (v::numeric - m)"
                " END",
    },
}


def read_grouped(
    conn: Connection,
    groups: Sequence[dict[str, list[int]]],
    span: tuple[int, int],
    *,
    since_step: int | None,
    until_step: int | None,
    max_points: int,
    center: str = "median",
    band: str = "minmax",
) -> list[dict[str, GroupedSeries]]:
    """Per group, its grouped series by key, in one statement.

    `groups[i]` maps each key to the series ids of group i's runs that recorded it (a key
    with no series gives an empty series); `span` is the union of those series' (first,
    last) steps inside [since_step, until_step]."""
    keys = sorted({k for g in groups for k in g})
    out = [{k: GroupedSeries(k) for k in g} for g in groups]
    rows = [(gi, keys.index(k), sid) for gi, g in enumerate(groups) for k, sids in g.items()
            for sid in sids]
    if not rows:
        return out
    first, last = span
    lo = first if since_step is None else since_step
    hi = last if until_step is None else until_step
    params = _grid_params(first, last, lo, hi, max_points)
    # Literal integers (ours, not the client's): thousands of rows would pass SQLite's limit
    # on bound parameters.
    values = [f"({int(gi)}, {int(ki)}, {int(sid)})" for gi, ki, sid in rows]
    parts = dict(_DIALECT[conn.dialect.name])
    if band != "std":  # no deviations to sum (PostgreSQL's numeric squares cost the most)
        parts |= {"finite_v": "CAST(NULL AS float)", "dev2": "CAST(NULL AS float)"}
    sql = _GROUPED.format(rows=", ".join(values), **parts)
    for g, k, _b, smin, smax, n, bad, vmin, vmax, vsum, mlo, mhi, ss in conn.execute(
            text(sql), params):
        _append(out[g][keys[k]], smin, smax, int(n), int(bad), vmin, vmax, vsum, mlo, mhi, ss,
                center=center, band=band)
    return out


def _mid(a: float, b: float) -> float:
    """(a + b) / 2 without overflowing when both are near the largest float."""
    s = a + b
    return s / 2 if math.isfinite(s) or not (math.isfinite(a) and math.isfinite(b)) \
        else a / 2 + b / 2


def _append(out: GroupedSeries, smin, smax, n, bad, vmin, vmax, vsum, mlo, mhi, ss, *,
            center: str, band: str) -> None:
    out.steps.append((smin + smax) / 2)
    out.n.append(n)
    out.nonfinite.append(bad)
    if n == 0:
        out.center.append(None)
        out.lo.append(None)
        out.hi.append(None)
        return
    # SQLite turns a NaN result (inf + -inf) into NULL
    mean = math.nan if vsum is None else float(vsum) / n
    mid = _mid(float(mlo), float(mhi)) if mlo is not None else math.nan
    out.center.append(mid if center == "median" else mean)
    if band == "minmax":
        out.lo.append(float(vmin))
        out.hi.append(float(vmax))
        return
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or ss is None:
        std = math.nan  # a run's mean overflowed: no meaningful spread
    else:
        std = float((Decimal(ss) / n).sqrt()) if isinstance(ss, Decimal) else math.sqrt(
            max(float(ss), 0.0) / n)
    out.lo.append(mean - std)
    out.hi.append(mean + std)
