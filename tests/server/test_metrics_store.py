"""server/db/metrics.py against brute force, on SQLite and PostgreSQL.

The downsampled read must equal a plain numpy computation over the raw points for every
range: rollups inside, raw points at the edges, every level of the pyramid.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from server.db.downsample import plan_buckets
from server.db.metrics import (
    delete_run_metrics,
    insert_points,
    read_series,
    run_keys,
    series_ids,
)
from server.db.models import ROLLUP_BASE, Point, Rollup, Run, Series, encode_value
from server.db.session import make_engine


def _new_run(conn) -> int:
    return conn.execute(
        insert(Run).values(name="t", spec={}, queue="q", total=1)
    ).inserted_primary_key[0]


def _brute(steps, values, width, lo, hi):
    """Per output bucket (step // width) over [lo, hi]: mean step span, mean, min, max..."""
    out = {}
    for s, v in zip(steps, values, strict=True):
        if lo <= s <= hi:
            out.setdefault(s // width, []).append((s, v))
    rows = []
    for b in sorted(out):
        pts = out[b]
        fin = [v for _, v in pts if math.isfinite(v)]
        ss = [s for s, _ in pts]
        rows.append(
            ((min(ss) + max(ss)) / 2, np.mean(fin) if fin else None,
             min(fin) if fin else None, max(fin) if fin else None, len(pts), len(pts) - len(fin))
        )
    return rows


@pytest.fixture
def engine(migrated_db_url):
    e = make_engine(migrated_db_url)
    yield e
    e.dispose()


def _write(engine, run_id, key, steps, values, batch=997):
    with engine.begin() as c:
        sid = series_ids(c, run_id, [key])[key]
    for i in range(0, len(steps), batch):  # odd batches: buckets straddle flushes
        rows = [(sid, s, *encode_value(v)) for s, v in
                zip(steps[i:i + batch], values[i:i + batch], strict=True)]
        with engine.begin() as c:
            insert_points(c, rows)
    return sid


def test_downsampled_reads_equal_brute_force(engine):
    rng = random.Random(0)
    n = 300_000
    steps = list(range(3, 3 + n))  # not aligned to any bucket width
    values = [math.sin(s / 500) + rng.gauss(0, 0.1) for s in steps]
    for s in (10, 70_000, 70_001, 250_000):
        values[s - 3] = [math.nan, math.inf, -math.inf, math.nan][s % 4]
    with engine.begin() as c:
        rid = _new_run(c)
    sid = _write(engine, rid, "train/loss", steps, values)
    cases = [(None, None, 1000), (None, None, 50), (12_345, 277_777, 300),
             (100_000, None, 1000), (None, 4000, 100), (299_000, None, 1000),
             (5, 300_002, 7)]
    with engine.connect() as c:
        for since, until, mp in cases:
            got = read_series(c, sid, "k", since_step=since, until_step=until, max_points=mp)
            lo = 3 if since is None else since
            hi = steps[-1] if until is None else until
            first, last = max(lo, 3), min(hi, steps[-1])
            if last - first + 1 <= mp:
                assert not got.buckets
                continue
            _, width = plan_buckets(first, last, mp)
            want = _brute(steps, values, width, lo, hi)
            assert got.buckets and len(got.steps) == len(want) <= mp, (since, until, mp)
            for i, (st, mean, vmin, vmax, cnt, bad) in enumerate(want):
                assert got.steps[i] == st
                assert got.counts[i] == cnt and got.nonfinite[i] == bad
                assert got.lo[i] == vmin and got.hi[i] == vmax
                assert got.values[i] == pytest.approx(mean, rel=1e-9, abs=1e-12)


def test_plan_uses_coarse_levels_for_long_ranges():
    level, width = plan_buckets(0, 999_999, 1000)
    assert level >= 1 and width % ROLLUP_BASE**level == 0 and 999_999 // width + 1 <= 1000
    assert ROLLUP_BASE ** (level + 1) * 1000 > 2 * 1_000_000  # the coarsest that fits
    assert plan_buckets(0, 9_999, 1000)[0] == 0  # short ranges read raw points
    # ...unless rollups still give half the points asked for: a 10k-step run at 300 points.
    level, width = plan_buckets(0, 9_999, 300)
    assert (level, width) == (1, ROLLUP_BASE) and 150 <= 9_999 // width + 1 <= 300


def test_raw_reads_keep_non_finite_values_and_ranges(engine):
    with engine.begin() as c:
        rid = _new_run(c)
    vals = [1.0, math.nan, math.inf, -math.inf, 2.5]
    sid = _write(engine, rid, "x", list(range(5)), vals)
    with engine.connect() as c:
        got = read_series(c, sid, "x")
        assert got.steps == [0, 1, 2, 3, 4]
        assert got.values[0] == 1.0 and math.isnan(got.values[1])
        assert got.values[2:] == [math.inf, -math.inf, 2.5]
        assert read_series(c, sid, "x", since_step=3).steps == [3, 4]
        assert read_series(c, sid, "x", since_step=1, until_step=2, max_points=10).steps == [1, 2]


def test_writes_are_idempotent_and_rollups_stay_exact(engine):
    with engine.begin() as c:
        rid = _new_run(c)
    steps = list(range(5000))
    sid = _write(engine, rid, "k", steps, [float(s) for s in steps])
    _write(engine, rid, "k", steps[1000:3000], [-1.0] * 2000)  # a redelivery: ignored
    with engine.connect() as c:
        assert c.scalar(select(func.count()).select_from(Point)) == 5000
        top = c.execute(select(Rollup.n, Rollup.vsum).where(
            Rollup.series_id == sid, Rollup.level == 1)).all()
        assert sum(n for n, _ in top) == 5000
        assert sum(v for _, v in top) == sum(steps)


def test_series_ids_are_stable_and_delete_removes_everything(engine):
    with engine.begin() as c:
        rid, other = _new_run(c), _new_run(c)
        a = series_ids(c, rid, ["a", "b"])
        again = series_ids(c, rid, ["b", "a", "c"])
        assert {k: again[k] for k in a} == a and len(set(again.values())) == 3
        assert run_keys(c, rid) == again
    _write(engine, rid, "a", list(range(100)), [1.0] * 100)
    _write(engine, other, "a", list(range(100)), [1.0] * 100)
    with engine.begin() as c:
        delete_run_metrics(c, rid)
    with engine.connect() as c:
        assert run_keys(c, rid) == {}
        assert c.scalar(select(func.count()).select_from(Point)) == 100
        assert c.scalar(select(func.count()).select_from(Series)) == 1
        left = c.scalar(select(func.count()).select_from(Rollup))
        assert left == c.scalar(select(func.count()).select_from(Rollup).where(
            Rollup.series_id == run_keys(c, other)["a"]))


def test_float_sums_are_plain_sums_below_the_edge_and_overflow_to_infinity(pg_url):
    """server/db/float_sums.py in PostgreSQL: bit for bit the plain float8 arithmetic where it
    cannot overflow; +-inf (never an error) where it does; NaN kept; NULLs ignored."""
    from sqlalchemy import create_engine, text

    from server.db import float_sums

    engine = create_engine(pg_url)
    try:
        with engine.connect() as c:
            def add(a: float, b: float) -> float:
                return c.execute(text("SELECT " + float_sums.add(":a", ":b")),
                                 {"a": a, "b": b}).scalar()

            def total(xs: list, agg: str | None = None) -> float | None:
                rows = ", ".join(f"(CAST(:x{i} AS float8))" for i in range(len(xs)))
                sql = f"SELECT {agg or float_sums.total('v')} FROM (VALUES {rows}) AS t(v)"
                return c.execute(text(sql), {f"x{i}": x for i, x in enumerate(xs)}).scalar()

            assert add(0.1, 0.2) == 0.1 + 0.2
            assert add(1e308, 1e308) == math.inf and add(-1e308, -1e308) == -math.inf
            assert add(1e308, -1.5e308) == -0.5e308
            assert add(math.inf, 1.0) == math.inf and math.isnan(add(math.inf, -math.inf))
            xs = [0.1, 0.7, 1e-300, 3.3e10, None]
            assert total(xs) == total(xs, "sum(v)")  # the plain sum, bit for bit
            assert total([1e308, 1.5e308]) == math.inf
            assert total([1e308, 1.5e308, -1.7e308, 0.25]) == pytest.approx(0.8e308)
            assert total([None, None]) is None
    finally:
        engine.dispose()
