"""The fast path of metric writes into PostgreSQL: binary COPY straight into metric_points.

Measured against the alternatives the issue named (a prototype, 32 keys x 2,000 steps a
batch, one writer, 2 shared cores, 2026-12-02): the single INSERT ... SELECT FROM unnest ...
ON CONFLICT DO NOTHING statement stored 134k points/s on a quiet machine; COPY into a temporary
staging table then that insert-ignore 192k/s (speculative insertion costs an extra index
descent per row, and INSERT ... SELECT inserts heap rows one at a time); a binary COPY into
metric_points itself 526k/s (COPY inserts heap rows in batches, one index descent per row).
At load 13 on the same 2 cores the ratios held: old 29k, staging + insert-ignore 40k, staging +
plain INSERT (anti-join) 91k, direct COPY 114k/s. synchronous_commit off added ~7-10 %: not
worth it, since an acknowledged ingest batch is deleted from the SDK's spool and must survive
a database crash. The rollup upsert is ~15 % of the direct COPY path.

COPY cannot skip a row that is already there, so it only gets the rows that cannot be: per
series, those past the newest step stored (one index probe per series tells). The rest (a
redelivery, a resumed run re-measuring from its checkpoint, a batch sent twice) goes through
the insert-ignore statement, whose RETURNING feeds the rollups only the rows really inserted.
Should a concurrent writer of the same series insert a row between the probe and the COPY, the
COPY fails on the primary key inside a savepoint, which is rolled back, and the whole batch
takes the insert-ignore path: the unique index, not the probe, is what guarantees exactness.

The COPY buffer and the rollups of COPY'd rows are built by numpy (no Python loop per point),
and the rollups go in as one additive upsert of a few hundred rows: exact, because every row
counted was inserted by that COPY.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from server.db import float_sums
from server.db.models import ROLLUP_BASE, ROLLUP_LEVELS
from server.db.point_arrays import flags_of

# COPY ... (FORMAT BINARY): signature, flags, header extension length; trailer -1.
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = b"\xff\xff"
# One row: field count, then (length, data) per column, all big-endian.
_ROW = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("sid", ">i4"), ("l2", ">i4"), ("step", ">i4"),
                 ("l3", ">i4"), ("value", ">f8"), ("l4", ">i4"), ("flag", ">i2")])
_VALUE_AT = _ROW.fields["value"][1]  # byte offset of the value's 8 data bytes

_COPY = "COPY metric_points (series_id, step, value, flag) FROM STDIN (FORMAT BINARY)"
_NEWEST = (
    "SELECT u.s, (SELECT max(p.step) FROM metric_points p WHERE p.series_id = u.s) "
    "FROM unnest(%b::int4[]) AS u(s)"
)
# Rollup increments merged into the buckets already stored: counts and sums add (NULL sums:
# no finite value yet), extremes and step spans widen. Both write paths (this COPY's numpy
# increments, metrics.py's insert-ignore RETURNING rows) merge by this one rule.
MERGE_ROLLUPS = (
    "ON CONFLICT (series_id, level, bucket) DO UPDATE SET "
    "n = metric_rollups.n + excluded.n, n_bad = metric_rollups.n_bad + excluded.n_bad, "
    "vsum = CASE WHEN metric_rollups.vsum IS NULL THEN excluded.vsum "
    "WHEN excluded.vsum IS NULL THEN metric_rollups.vsum "
    "ELSE " + float_sums.add("metric_rollups.vsum", "excluded.vsum") + " END, "
    "vmin = least(metric_rollups.vmin, excluded.vmin), "
    "vmax = greatest(metric_rollups.vmax, excluded.vmax), "
    "step_min = least(metric_rollups.step_min, excluded.step_min), "
    "step_max = greatest(metric_rollups.step_max, excluded.step_max)"
)
_ADD_ROLLUPS = (
    "INSERT INTO metric_rollups "
    "(series_id, level, bucket, n, n_bad, vsum, vmin, vmax, step_min, step_max) "
    "SELECT s, l, b, n, nb, CASE WHEN nb < n THEN vs END, CASE WHEN nb < n THEN lo END, "
    "CASE WHEN nb < n THEN hi END, smin, smax FROM unnest(%b::int4[], %b::int2[], %b::int4[], "
    "%b::int4[], %b::int4[], %b::float8[], %b::float8[], %b::float8[], %b::int4[], %b::int4[]) "
    "AS u(s, l, b, n, nb, vs, lo, hi, smin, smax) " + MERGE_ROLLUPS
)


def copy_buffer(sid: np.ndarray, step: np.ndarray, value: np.ndarray) -> bytes:
    """The binary COPY stream of rows (series_id, step, value, flag); a non-finite value is
    sent as NULL (length -1, no data bytes) with its flag, as encode_value stores it."""
    n = len(sid)
    rows = np.empty(n, _ROW)
    rows["nf"] = 4
    rows["l1"] = rows["l2"] = 4
    rows["sid"] = sid
    rows["step"] = step
    finite = np.isfinite(value)
    rows["l3"] = np.where(finite, 8, -1)
    rows["value"] = value
    rows["l4"] = 2
    rows["flag"] = flags_of(value)
    raw = rows.view(np.uint8).reshape(n, _ROW.itemsize)
    if finite.all():
        body = raw.tobytes()
    else:  # drop the 8 data bytes of each NULL: rows differ in length from here on
        keep = np.ones(raw.shape, bool)
        keep[~finite, _VALUE_AT:_VALUE_AT + 8] = False
        body = raw[keep].tobytes()
    return _HEADER + body + _TRAILER


def rollup_rows(sid: np.ndarray, step: np.ndarray, value: np.ndarray) -> list[list]:
    """The rollup increments of rows sorted by (series, step), every level, as the columns
    of _ADD_ROLLUPS (vsum/vmin/vmax of a bucket with no finite value are ignored there)."""
    finite = np.isfinite(value)
    v = np.where(finite, value, 0.0)
    lo_in = np.where(finite, value, np.inf)
    hi_in = np.where(finite, value, -np.inf)
    cols: list[list[np.ndarray]] = [[] for _ in range(10)]
    for level in range(1, ROLLUP_LEVELS + 1):
        bucket = step // ROLLUP_BASE**level
        # Sorted by (series, step) means sorted by (series, bucket): groups are runs.
        starts = np.flatnonzero(np.r_[True, (sid[1:] != sid[:-1]) | (bucket[1:] != bucket[:-1])])
        n = np.diff(np.r_[starts, len(sid)])
        # A bucket of values near the largest float sums to +-inf: data, as in SQLite and in
        # float_sums.total on PostgreSQL, so numpy's overflow warning says nothing wrong.
        with np.errstate(over="ignore"):
            sums = np.add.reduceat(v, starts)
        parts = (
            sid[starts], np.full(len(starts), level), bucket[starts], n,
            n - np.add.reduceat(finite.astype(np.int64), starts),
            sums, np.minimum.reduceat(lo_in, starts),
            np.maximum.reduceat(hi_in, starts), step[starts], step[np.r_[starts[1:], len(sid)] - 1],
        )
        for col, part in zip(cols, parts, strict=True):
            col.append(part)
    return [np.concatenate(c).tolist() for c in cols]


@contextmanager
def raw_cursor(conn: Connection, what: str) -> Iterator[psycopg.Cursor]:
    """A binary-parameter cursor on the connection's driver connection, whose errors reach
    the caller as SQLAlchemy's (OperationalError on a lost server, IntegrityError, ...), as
    they would through conn.execute: session.with_retries recognises the transient ones, and
    a connection the server dropped is invalidated rather than handed back to the pool."""
    raw = conn.connection.dbapi_connection
    try:
        with raw.cursor(binary=True) as cur:
            yield cur
    except psycopg.Error as exc:
        lost = conn.dialect.is_disconnect(exc, raw, None)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(what, None, exc, psycopg.Error, connection_invalidated=lost,
                                  dialect=conn.dialect) from exc


def newest_steps(cur: psycopg.Cursor, sids: list[int]) -> dict[int, int | None]:
    cur.execute(_NEWEST, (sids,))
    return dict(cur.fetchall())


def copy_points(conn: Connection, sid: np.ndarray, step: np.ndarray, value: np.ndarray,
                insert_ignore) -> None:
    """Store rows sorted and unique by (series, step) and their rollups, exactly.

    `insert_ignore(conn, sid, step, value)` is the slow, always-correct path (insert-ignore
    with rollups from RETURNING) for the rows COPY must not get."""
    if not len(sid):
        return
    with raw_cursor(conn, "metric_points: COPY of new rows") as cur:
        first = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
        newest = newest_steps(cur, sid[first].tolist())
        bound = np.array([newest[s] if newest[s] is not None else -1
                          for s in sid[first].tolist()], np.int64)
        fresh = step > np.repeat(bound, np.diff(np.r_[first, len(sid)]))
        if fresh.any():
            f_sid, f_step, f_value = sid[fresh], step[fresh], value[fresh]
            cur.execute("SAVEPOINT landscope_copy")
            try:
                with cur.copy(_COPY) as copy:
                    copy.write(copy_buffer(f_sid, f_step, f_value))
            except psycopg.errors.UniqueViolation:
                # A concurrent writer of the same series got there first: every row takes
                # the insert-ignore path, which counts only what it inserts. (While that
                # writer is uncommitted this COPY waits and the server stops reading it;
                # past PG_KEEPALIVES' tcp_user_timeout, 10 s, the connection is cut: an
                # OperationalError, transient, which the caller retries.)
                cur.execute("ROLLBACK TO SAVEPOINT landscope_copy")
                fresh[:] = False
            else:
                cur.execute("RELEASE SAVEPOINT landscope_copy")
                cur.execute(_ADD_ROLLUPS, rollup_rows(f_sid, f_step, f_value))
    if not fresh.all():
        rest = ~fresh
        insert_ignore(conn, sid[rest], step[rest], value[rest])
