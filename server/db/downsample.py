"""Downsampled reads: a series' points in equal buckets of steps, each with its mean and its
min/max envelope, computed in SQL from the rollups and the raw points at the range's edges
(server/db/metrics.py writes both). One series at a time (read_series) or, for a page's
first read, every series of a run in one statement (read_buckets_many).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import Connection, bindparam, text

from server.db import float_sums
from server.db.models import ROLLUP_BASE, ROLLUP_LEVELS


@dataclass
class SeriesData:
    """One key's points in [since, until]. Raw when `buckets` is False; else one entry per
    bucket: steps are the bucket's mean step, values its mean over finite points (None when
    none is finite), lo/hi its finite min and max, counts its points and nonfinite how many
    of them were NaN or infinite (raw values carry those as float nan/inf)."""

    key: str
    buckets: bool = False
    steps: list[float] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    lo: list[float | None] = field(default_factory=list)
    hi: list[float | None] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    nonfinite: list[int] = field(default_factory=list)


def read_buckets(conn: Connection, series_id: int, key: str, span: tuple[int, int], *,
                 since_step: int | None, until_step: int | None, max_points: int) -> SeriesData:
    """The downsampled form of a series whose points in range span `span` (first, last step;
    from read_series's probes or series_spans) and more than max_points steps."""
    first, last = span
    lo = first if since_step is None else since_step
    hi = last if until_step is None else until_step
    return _bucketed(conn, series_id, key, first, last, lo, hi, max_points)


def plan_buckets(first: int, last: int, max_points: int) -> tuple[int, int]:
    """(rollup level to read, output bucket width in steps) for points spanning [first, last].

    The width is a multiple of the level's bucket width, so output buckets are unions of
    whole rollup buckets; the level is the coarsest that still gives at least max_points / 2
    buckets. (Asking for a full max_points would read raw points until a range spans 64 x
    max_points steps: a 10,000-step run drawn at 300 points would aggregate every point
    instead of 157 rollups.) Output bucket b holds steps [b*width, (b+1)*width).
    """
    span = last - first + 1
    level = 0
    while level < ROLLUP_LEVELS and ROLLUP_BASE ** (level + 1) * max_points <= 2 * span:
        level += 1
    unit = ROLLUP_BASE**level
    width = unit * math.ceil(span / (max_points * unit))
    while last // width - first // width + 1 > max_points:
        width += unit
    return level, width


# {vsum}: the sum of vsum, which PostgreSQL must take through float_sums.total (a bare float8
# sum raises on overflow there; SQLite's gives inf).
_BUCKETS_SQL = (
    "SELECT b, min(smin), max(smax), {vsum}, sum(n), sum(n_bad), min(vmin), max(vmax) "
    "FROM ("
    " SELECT step / :width AS b, step AS smin, step AS smax, value AS vsum, 1 AS n,"
    " CASE WHEN value IS NULL THEN 1 ELSE 0 END AS n_bad, value AS vmin, value AS vmax"
    " FROM metric_points WHERE series_id = :sid AND step >= :lo AND step < :a"
    " UNION ALL"
    " SELECT step / :width, step, step, value, 1,"
    " CASE WHEN value IS NULL THEN 1 ELSE 0 END, value, value"
    " FROM metric_points WHERE series_id = :sid AND step >= :z AND step <= :hi"
    " UNION ALL"
    " SELECT (bucket * :unit) / :width, step_min, step_max, vsum, n, n_bad, vmin, vmax"
    " FROM metric_rollups WHERE series_id = :sid AND level = :level"
    " AND bucket >= :ra AND bucket < :rz"
    ") AS parts GROUP BY b ORDER BY b"
)
_BUCKETS = {
    dialect: text(_BUCKETS_SQL.format(vsum=vsum)).bindparams(bindparam("level"))
    for dialect, vsum in (("sqlite", "sum(vsum)"), ("postgresql", float_sums.total("vsum")))
}


def _bucket_params(first: int, last: int, lo: int, hi: int, max_points: int) -> dict[str, int]:
    """What _BUCKETS needs for one series whose points span [first, last], read over [lo, hi]:
    whole rollup buckets [ra, rz) inside, raw points in [lo, a) and [z, hi] at the edges."""
    level, width = plan_buckets(first, last, max_points)
    unit = ROLLUP_BASE**level
    if level == 0:
        a = z = hi + 1  # everything raw: the span is under 32 x max_points
        ra = rz = 0
    else:
        ra = -(-lo // unit)  # first rollup bucket wholly inside [lo, hi]
        rz = (hi + 1) // unit  # one past the last
        a, z = ra * unit, rz * unit
        if rz <= ra:
            ra = rz = 0
            a = z = hi + 1
    return {"width": width, "unit": unit, "level": level, "lo": lo, "hi": hi, "a": a, "z": z,
            "ra": ra, "rz": rz}


def _fill_buckets(out: SeriesData, columns) -> SeriesData:
    """Fill `out` from the columns smin, smax, vsum, n, n_bad, vmin, vmax (a value per bucket,
    in step order): a bucket's step is its points' middle, its value their finite mean (None
    when none is finite)."""
    smin, smax, vsum, n, bad, vmin, vmax = columns
    out.steps = [(a + b) / 2 for a, b in zip(smin, smax, strict=True)]
    out.counts = [int(k) for k in n]
    out.nonfinite = [int(k) for k in bad]
    out.values = [float(v) / (k - z) if k - z else None
                  for v, k, z in zip(vsum, out.counts, out.nonfinite, strict=True)]
    out.lo, out.hi = list(vmin), list(vmax)
    return out


def _columns(rows: list) -> list[list]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(7)]


def _bucketed(conn, series_id, key, first, last, lo, hi, max_points) -> SeriesData:
    """Buckets over [lo, hi]: whole rollup buckets inside, raw points at the two edges."""
    params = {"sid": series_id, **_bucket_params(first, last, lo, hi, max_points)}
    rows = [row[1:] for row in conn.execute(_BUCKETS[conn.dialect.name], params).all()]
    return _fill_buckets(SeriesData(key, buckets=True), _columns(rows))


_COLUMNS = ("sid", "width", "unit", "level", "lo", "hi", "a", "z", "ra", "rz")
# _BUCKETS for many series at once: each series' parameters are a row of p.
_BUCKETS_MANY = (
    "WITH p ({cols}) AS (VALUES {rows}) "
    "SELECT sid, b, min(smin) AS smin, max(smax) AS smax, {vsum} AS vsum, sum(n) AS n, "
    "sum(n_bad) AS n_bad, min(vmin) AS vmin, max(vmax) AS vmax "
    "FROM ("
    " SELECT p.sid, m.step / p.width AS b, m.step AS smin, m.step AS smax, m.value AS vsum,"
    " 1 AS n, CASE WHEN m.value IS NULL THEN 1 ELSE 0 END AS n_bad, m.value AS vmin,"
    " m.value AS vmax"
    " FROM p JOIN metric_points m ON m.series_id = p.sid AND m.step >= p.lo AND m.step < p.a"
    " UNION ALL"
    " SELECT p.sid, m.step / p.width, m.step, m.step, m.value, 1,"
    " CASE WHEN m.value IS NULL THEN 1 ELSE 0 END, m.value, m.value"
    " FROM p JOIN metric_points m ON m.series_id = p.sid AND m.step >= p.z AND m.step <= p.hi"
    " UNION ALL"
    " SELECT p.sid, (r.bucket * p.unit) / p.width, r.step_min, r.step_max, r.vsum, r.n,"
    " r.n_bad, r.vmin, r.vmax"
    " FROM p JOIN metric_rollups r ON r.series_id = p.sid AND r.level = p.level"
    " AND r.bucket >= p.ra AND r.bucket < p.rz"
    ") AS parts GROUP BY sid, b"
)
# PostgreSQL: one row per series with its buckets as arrays, which the driver builds in C
# (fetching a row per bucket through SQLAlchemy cost more than the query).
_ARRAYS = ("SELECT sid, " + ", ".join(f"array_agg({c} ORDER BY b)" for c in (
    "smin", "smax", "vsum", "n", "n_bad", "vmin", "vmax")) + " FROM ({grouped}) AS g GROUP BY sid")


def read_buckets_many(conn: Connection, series: dict[str, tuple[int, tuple[int, int]]], *,
                      since_step: int | None, until_step: int | None,
                      max_points: int) -> dict[str, SeriesData]:
    """read_buckets for several series ({key: (series id, span)}) in one statement: a page's
    first read downsamples every key, which cost a statement (a round trip) per key."""
    out = {key: SeriesData(key, buckets=True) for key in series}
    if not series:
        return out
    key_of, params, rows = {}, {}, []
    for i, (key, (sid, (first, last))) in enumerate(series.items()):
        lo = first if since_step is None else since_step
        hi = last if until_step is None else until_step
        row = {"sid": sid, **_bucket_params(first, last, lo, hi, max_points)}
        params.update({f"{c}_{i}": row[c] for c in _COLUMNS})
        rows.append("(" + ", ".join(f":{c}_{i}" for c in _COLUMNS) + ")")
        key_of[sid] = key
    pg = conn.dialect.name == "postgresql"
    sql = _BUCKETS_MANY.format(cols=", ".join(_COLUMNS), rows=", ".join(rows),
                               vsum=float_sums.total("vsum") if pg else "sum(vsum)")
    if pg:
        for sid, *columns in conn.execute(text(_ARRAYS.format(grouped=sql)), params).all():
            _fill_buckets(out[key_of[sid]], columns)
        return out
    grouped: dict[int, list] = {}
    for sid, _b, *rest in conn.execute(text(sql + " ORDER BY sid, b"), params).all():
        grouped.setdefault(sid, []).append(rest)
    for sid, rest in grouped.items():
        _fill_buckets(out[key_of[sid]], _columns(rest))
    return out
