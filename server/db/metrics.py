"""Metric writes and reads, in SQL, shared by the worker's sink (writes) and the API (reads).

Writes are idempotent (insert-ignore on the primary key), so a redelivered task that measures
a step again duplicates nothing. insert_series is the write path of scalars (the ingest
endpoint, the worker's SqlSink): on PostgreSQL it sends the rows no series holds yet by binary
COPY (server/db/ingest_pg.py, ~4x the statement below) and the rest through that statement.
insert_points, kept for callers holding encoded rows, is that statement: four arrays in one
INSERT ... SELECT FROM unnest(...) statement: one round trip and one plan per batch (MLflow's
row-per-statement writes were its historic bottleneck). SQLite takes an executemany in one
transaction, which its C loop makes fast enough.

Reads downsample in SQL (server/db/downsample.py): past `max_points`, the step range is cut
into equal buckets and each bucket returns its mean and its min/max envelope, computed by GROUP
BY in the database. To keep that fast on long runs, every write also refreshes the rollup
buckets it touched (64, 4096 and 262144 steps wide, each level from the one below), so a read
groups fewer than 32 x max_points rollup rows (or raw points) plus the raw points at the
edges of its range.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import Connection, delete, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from server.db import float_sums
from server.db.downsample import SeriesData, read_buckets
from server.db.ingest_pg import MERGE_ROLLUPS, copy_points, raw_cursor
from server.db.models import (
    FINITE,
    ROLLUP_BASE,
    ROLLUP_LEVELS,
    DistributionRecord,
    Point,
    ProbeRecord,
    Rollup,
    Series,
    decode_value,
)
from server.db.point_arrays import encoded, sorted_unique, steps_array, values_array

PointRow = tuple[int, int, float | None, int]  # (series_id, step, value or None, flag)


def _insert(conn: Connection, table):
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return pg_insert(table)
    if dialect == "sqlite":
        return sqlite_insert(table)
    raise NotImplementedError(f"metrics store: unsupported database {dialect!r}")


# -- writes -----------------------------------------------------------------------------------


def series_ids(conn: Connection, run_id: int, keys: Iterable[str]) -> dict[str, int]:
    """The series id of each key of a run, creating the missing ones (race-safe)."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    query = select(Series.key, Series.id).where(Series.run_id == run_id, Series.key.in_(keys))
    found = {k: i for k, i in conn.execute(query)}
    if len(found) == len(keys):  # every batch after a run's first: one read, no insert
        return found
    missing = [k for k in keys if k not in found]
    stmt = _insert(conn, Series).values([{"run_id": run_id, "key": k} for k in missing])
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["run_id", "key"]))
    return {k: i for k, i in conn.execute(query)}


_SQLITE_INSERT = (
    "INSERT OR IGNORE INTO metric_points (series_id, step, value, flag) VALUES (?, ?, ?, ?)"
)


def insert_points(conn: Connection, rows: Sequence[PointRow]) -> None:
    """Store points (a (series, step) already stored is left as it is) and their rollups."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _insert_pg(conn, rows)
        return
    conn.exec_driver_sql(_SQLITE_INSERT, list(rows))
    spans: dict[int, tuple[int, int]] = {}
    for sid, step, _v, _f in rows:
        lo, hi = spans.get(sid, (step, step))
        spans[sid] = (min(lo, step), max(hi, step))
    update_rollups(conn, spans)


def insert_series(
    conn: Connection,
    run_id: int,
    columns: Mapping[str, tuple[Sequence[int], Sequence[float]]],
) -> int:
    """Store raw float points of a run, per key (steps, values); returns the points received.

    Values may be NaN or +-inf (stored as NULL plus a flag). Series are created as needed;
    a (key, step) already stored, or repeated within the batch, is left as it was first
    written, and rollups stay exact either way. This is the one write path of scalars: the
    ingest endpoint and the worker's SqlSink both use it. PostgreSQL takes most rows by
    binary COPY (server/db/ingest_pg.py), SQLite an executemany.
    """
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, (steps, values) in columns.items():
        if len(steps) != len(values):
            raise ValueError(f"metric {key!r}: {len(steps)} steps but {len(values)} values")
        if len(steps):
            arrays[key] = (steps_array(key, steps), values_array(key, values))
    if not arrays:
        return 0
    total = sum(len(st) for st, _ in arrays.values())
    ids = series_ids(conn, run_id, arrays)
    sid = np.concatenate([np.full(len(st), ids[k], np.int64) for k, (st, _) in arrays.items()])
    step = np.concatenate([st for st, _ in arrays.values()])
    value = np.concatenate([v for _, v in arrays.values()])
    sid, step, value = sorted_unique(sid, step, value)  # the index fills in order
    if conn.dialect.name == "postgresql":
        copy_points(conn, sid, step, value, _insert_ignore_pg)
        return total
    conn.exec_driver_sql(_SQLITE_INSERT, list(zip(sid.tolist(), step.tolist(),
                                                  *encoded(value), strict=True)))
    first = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])  # sorted: a span per series
    last = np.r_[first[1:], len(sid)] - 1
    spans = zip(step[first].tolist(), step[last].tolist(), strict=True)
    update_rollups(conn, dict(zip(sid[first].tolist(), spans, strict=True)))
    return total


def _insert_ignore_pg(conn: Connection, sid: np.ndarray, step: np.ndarray,
                      value: np.ndarray) -> None:
    values, flags = encoded(value)
    with raw_cursor(conn, _PG_INSERT) as cur:
        cur.execute(_PG_INSERT, (sid.tolist(), step.tolist(), values, flags))


_ADD_TO_ROLLUPS = (
    "r{level} AS (INSERT INTO metric_rollups "
    "(series_id, level, bucket, n, n_bad, vsum, vmin, vmax, step_min, step_max) "
    "SELECT series_id, {level}, step / {width}, count(*), count(*) - count(value), "
    + float_sums.total("value") + ", min(value), max(value), min(step), max(step) FROM ins "
    "GROUP BY series_id, step / {width} " + MERGE_ROLLUPS + ")"
)
_PG_INSERT = (
    "WITH ins AS (INSERT INTO metric_points (series_id, step, value, flag) "
    "SELECT * FROM unnest(%b::int4[], %b::int4[], %b::float8[], %b::int2[]) "
    "ON CONFLICT DO NOTHING RETURNING series_id, step, value), "
    + ", ".join(
        _ADD_TO_ROLLUPS.format(level=level, width=ROLLUP_BASE**level)
        for level in range(1, ROLLUP_LEVELS + 1)
    )
    + " SELECT 1"
)


def _insert_pg(conn: Connection, rows: Sequence[PointRow]) -> None:
    """One statement: the points, and each rollup level incremented by the rows that were
    really inserted. RETURNING leaves out the points that were already there, so adding
    is exact under redelivery; binary parameters halve the cost of sending the arrays."""
    sid, step, value, flag = (list(c) for c in zip(*rows, strict=True))
    with raw_cursor(conn, _PG_INSERT) as cur:
        cur.execute(_PG_INSERT, (sid, step, value, flag))


_UPSERT = (
    "INSERT INTO metric_rollups "
    "(series_id, level, bucket, n, n_bad, vsum, vmin, vmax, step_min, step_max) {select} "
    "ON CONFLICT (series_id, level, bucket) DO UPDATE SET n = excluded.n, "
    "n_bad = excluded.n_bad, vsum = excluded.vsum, vmin = excluded.vmin, "
    "vmax = excluded.vmax, step_min = excluded.step_min, step_max = excluded.step_max"
)
_FROM_POINTS = (
    "SELECT p.series_id, 1, p.step / {base}, count(*), count(*) - count(p.value), "
    "sum(p.value), min(p.value), max(p.value), min(p.step), max(p.step) "
    "FROM metric_points p JOIN {spans} "
    "ON p.series_id = r.sid AND p.step >= r.lo AND p.step < r.hi "
    "GROUP BY p.series_id, p.step / {base}"
)
_FROM_BELOW = (
    "SELECT u.series_id, {level}, u.bucket / {base}, sum(u.n), sum(u.n_bad), sum(u.vsum), "
    "min(u.vmin), max(u.vmax), min(u.step_min), max(u.step_max) "
    "FROM metric_rollups u JOIN {spans} "
    "ON u.series_id = r.sid AND u.level = {below} AND u.bucket >= r.lo AND u.bucket < r.hi "
    "GROUP BY u.series_id, u.bucket / {base}"
)


def update_rollups(conn: Connection, spans: dict[int, tuple[int, int]]) -> None:
    """Recompute every rollup bucket that overlaps each series' step span [lo, hi].

    SQLite's path (it cannot feed an INSERT's RETURNING rows into another statement).
    Recomputing rather than adding keeps rollups exact under insert-ignore: a point written
    twice is counted once because the raw table holds it once. One statement per level
    covers every series of the batch, joined to their spans.
    """
    if not spans:
        return
    b = ROLLUP_BASE
    # Per series, the touched buckets of the level being built, in units of the level below.
    cur = {sid: (lo // b, hi // b) for sid, (lo, hi) in spans.items()}
    for level in range(1, ROLLUP_LEVELS + 1):
        ranges = [(sid, first * b, (last + 1) * b) for sid, (first, last) in cur.items()]
        template = _FROM_POINTS if level == 1 else _FROM_BELOW
        select_sql = template.format(base=b, level=level, below=level - 1, spans="{spans}")
        _exec_with_spans(conn, _UPSERT.format(select=select_sql), ranges)
        cur = {sid: (first // b, last // b) for sid, (first, last) in cur.items()}


def _exec_with_spans(conn: Connection, sql: str, ranges: list[tuple[int, int, int]]) -> None:
    """Run `sql` with {spans} bound to a relation r(sid, lo, hi) of the given rows."""
    rows = ", ".join("(?, ?, ?)" for _ in ranges)
    spans = f"(SELECT column1 AS sid, column2 AS lo, column3 AS hi FROM (VALUES {rows})) r"
    conn.exec_driver_sql(sql.format(spans=spans), tuple(x for r in ranges for x in r))


def delete_run_metrics(conn: Connection, run_id: int) -> None:
    """Points and rollups of a run (they have no foreign key to cascade through)."""
    ids = select(Series.id).where(Series.run_id == run_id).scalar_subquery()
    conn.execute(delete(Point).where(Point.series_id.in_(ids)))
    conn.execute(delete(Rollup).where(Rollup.series_id.in_(ids)))
    conn.execute(delete(Series).where(Series.run_id == run_id))


def insert_probe_records(conn: Connection, rows: Sequence[dict]) -> None:
    """Rows with run_id, probe, step, multiplier, eta, loss, grad_dist."""
    if rows:
        conn.execute(_insert(conn, ProbeRecord).on_conflict_do_nothing(), list(rows))


def insert_distributions(conn: Connection, rows: Sequence[dict]) -> None:
    """Rows with the columns of DistributionRecord (stats already JSON-safe)."""
    if rows:
        conn.execute(_insert(conn, DistributionRecord).on_conflict_do_nothing(), list(rows))


# -- reads ------------------------------------------------------------------------------------


def run_keys(conn: Connection, run_id: int) -> dict[str, int]:
    rows = conn.execute(select(Series.key, Series.id).where(Series.run_id == run_id))
    return {k: i for k, i in rows}


def read_series(
    conn: Connection,
    series_id: int,
    key: str,
    *,
    since_step: int | None = None,
    until_step: int | None = None,
    max_points: int | None = None,
) -> SeriesData:
    """Points of one series in [since_step, until_step], downsampled past max_points."""
    cond = [Point.series_id == series_id]
    if since_step is not None:
        cond.append(Point.step >= since_step)
    if until_step is not None:
        cond.append(Point.step <= until_step)
    if max_points is not None:
        # Two index probes give the step span; no count(*) scan needed to decide.
        first = conn.scalar(select(Point.step).where(*cond).order_by(Point.step).limit(1))
        if first is None:
            return SeriesData(key)
        last = conn.scalar(select(Point.step).where(*cond).order_by(Point.step.desc()).limit(1))
        if last - first + 1 > max_points:
            return read_buckets(conn, series_id, key, (first, last), since_step=since_step,
                                until_step=until_step, max_points=max_points)
    out = SeriesData(key)
    stmt = select(Point.step, Point.value, Point.flag).where(*cond).order_by(Point.step)
    for step, value, flag in conn.execute(stmt):
        out.steps.append(step)
        out.values.append(value if flag == FINITE else decode_value(value, flag))
    return out


def series_spans(
    conn: Connection,
    series_ids: Sequence[int],
    *,
    since_step: int | None = None,
    until_step: int | None = None,
) -> dict[int, tuple[int, int] | None]:
    """(first, last) step of each series in [since_step, until_step] (None: no point there),
    in one statement: a min and a max per series, each one index probe on (series_id, step)
    on both databases, as read_series's two probes are."""
    if not series_ids:
        return {}
    cond = [Point.series_id == Series.id]
    if since_step is not None:
        cond.append(Point.step >= since_step)
    if until_step is not None:
        cond.append(Point.step <= until_step)
    first = select(func.min(Point.step)).where(*cond).scalar_subquery()
    last = select(func.max(Point.step)).where(*cond).scalar_subquery()
    rows = conn.execute(select(Series.id, first, last).where(Series.id.in_(list(series_ids))))
    return {sid: None if a is None else (a, b) for sid, a, b in rows}


def read_raw_many(
    conn: Connection,
    series: dict[str, int],
    *,
    since_step: int | None = None,
    until_step: int | None = None,
) -> dict[str, SeriesData]:
    """Every point of several series in [since_step, until_step], in one statement: what a
    live page's poll asks for (a second of new points of every key), which read_series would
    answer with three statements per key."""
    out = {key: SeriesData(key) for key in series}
    if not series:
        return out
    key_of = {sid: key for key, sid in series.items()}
    cond = [Point.series_id.in_(list(key_of))]
    if since_step is not None:
        cond.append(Point.step >= since_step)
    if until_step is not None:
        cond.append(Point.step <= until_step)
    if conn.dialect.name == "postgresql":
        # One row per series with its points as arrays: the driver builds the lists in C,
        # twice as fast as a Python loop over a row per point.
        stmt = (select(Point.series_id, func.array_agg(aggregate_order_by(Point.step, Point.step)),
                       func.array_agg(aggregate_order_by(Point.value, Point.step)),
                       func.array_agg(aggregate_order_by(Point.flag, Point.step)))
                .where(*cond).group_by(Point.series_id))
        for sid, steps, values, flags in conn.execute(stmt):
            data = out[key_of[sid]]
            data.steps = steps
            data.values = values
            for i, flag in enumerate(flags):
                if flag != FINITE:
                    values[i] = decode_value(values[i], flag)
        return out
    stmt = (select(Point.series_id, Point.step, Point.value, Point.flag).where(*cond)
            .order_by(Point.series_id, Point.step))
    for sid, step, value, flag in conn.execute(stmt):
        data = out[key_of[sid]]
        data.steps.append(step)
        data.values.append(value if flag == FINITE else decode_value(value, flag))
    return out
