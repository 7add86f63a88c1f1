"""server/db/grouped.py against brute force, on SQLite and PostgreSQL.

Per group, key and bucket, the one statement must give what numpy gives from the raw points:
each run's finite mean in the bucket, then the median, mean, min, max and population std of
those across the group's runs, with n and nonfinite counted. The runs cover uneven step
ranges, NaN and infinite points, buckets some runs have no point in, groups of odd and even
size, and both the raw (a bucket per step) and the bucketed (rollups inside, raw edges) grids.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from sqlalchemy import insert

from server.db.downsample import plan_buckets
from server.db.grouped import read_grouped
from server.db.metrics import insert_series, series_spans
from server.db.models import Run
from server.db.session import make_engine


@pytest.fixture
def engine(migrated_db_url):
    e = make_engine(migrated_db_url)
    yield e
    e.dispose()


def _series(rng: random.Random, first: int, last: int, *, gap=None, bad=()) -> dict[int, float]:
    """Points at most steps of [first, last] (a few skipped, a gap left out), some non-finite."""
    out = {}
    for s in range(first, last + 1):
        if gap and gap[0] <= s <= gap[1]:
            continue
        if rng.random() < 0.05:
            continue
        out[s] = math.sin(s / 300) + rng.gauss(0, 0.2) + first / 1000
    for s, v in bad:
        out[s] = v
    return out


def _store(engine, data: dict[str, dict[int, float]]) -> dict[str, int]:
    """One run with these series; returns {key: series id}."""
    with engine.begin() as c:
        run_id = c.execute(insert(Run).values(name="r", spec={}, queue="q", total=1)
                           ).inserted_primary_key[0]
        insert_series(c, run_id, {k: (list(p), list(p.values())) for k, p in data.items()})
        from server.db.metrics import run_keys

        return run_keys(c, run_id)


def _brute(groups, since, until, max_points, center, band):
    """groups: per group, per key, the points {step: value} of each run that has the key."""
    inside = [(s, v) for g in groups for runs in g.values() for pts in runs
              for s, v in pts.items() if (since is None or s >= since)
              and (until is None or s <= until)]
    if not inside:
        return [{k: [] for k in g} for g in groups]
    first, last = min(s for s, _ in inside), max(s for s, _ in inside)
    width = 1 if last - first + 1 <= max_points else plan_buckets(first, last, max_points)[1]
    lo = first if since is None else since
    hi = last if until is None else until
    out = []
    for g in groups:
        got = {}
        for key, runs in g.items():
            buckets: dict[int, list[list[tuple[int, float]]]] = {}
            for i, pts in enumerate(runs):
                for s, v in pts.items():
                    if lo <= s <= hi:
                        buckets.setdefault(s // width, [[] for _ in runs])[i].append((s, v))
            rows = []
            for b in sorted(buckets):
                per_run = [r for r in buckets[b] if r]
                steps = [s for r in per_run for s, _ in r]
                vals, nonfinite = [], 0
                for r in per_run:
                    fin = [v for _, v in r if math.isfinite(v)]
                    if fin:
                        vals.append(float(np.mean(fin)))
                    else:
                        nonfinite += 1
                row = {"step": (min(steps) + max(steps)) / 2, "n": len(vals),
                       "nonfinite": nonfinite, "center": None, "lo": None, "hi": None}
                if vals:
                    a = np.array(vals)
                    row["center"] = float(np.median(a) if center == "median" else a.mean())
                    if band == "minmax":
                        row["lo"], row["hi"] = float(a.min()), float(a.max())
                    else:
                        row["lo"], row["hi"] = a.mean() - a.std(), a.mean() + a.std()
                rows.append(row)
            got[key] = rows
        out.append(got)
    return out


def _read(engine, stored_groups, since, until, max_points, center, band):
    """stored_groups: per group, per key, the series ids."""
    with engine.connect() as c:
        used = sorted({sid for g in stored_groups for ids in g.values() for sid in ids})
        spans = [s for s in series_spans(c, used, since_step=since, until_step=until).values()
                 if s is not None]
        if not spans:
            return None
        span = (min(a for a, _ in spans), max(b for _, b in spans))
        return read_grouped(c, stored_groups, span, since_step=since, until_step=until,
                            max_points=max_points, center=center, band=band)


def _close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _check(got, want):
    assert len(got) == len(want)
    for g_got, g_want in zip(got, want, strict=True):
        assert set(g_got) == set(g_want)
        for key, rows in g_want.items():
            s = g_got[key]
            assert s.steps == [r["step"] for r in rows], key
            assert s.n == [r["n"] for r in rows], key
            assert s.nonfinite == [r["nonfinite"] for r in rows], key
            for name in ("center", "lo", "hi"):
                values = getattr(s, name)
                bad = [(i, v, r[name]) for i, (v, r) in enumerate(zip(values, rows, strict=True))
                       if not _close(v, r[name])]
                assert not bad, (key, name, bad[:5])


@pytest.fixture
def arranged(engine):
    """Two groups: three runs (odd) and four runs (even), of uneven lengths and gaps."""
    rng = random.Random(7)
    nan, inf = math.nan, math.inf
    raw = [
        [  # group 0: three runs
            {"train/loss": _series(rng, 0, 4999, bad=[(100, nan), (2000, inf), (2001, -inf)]),
             "test/acc": _series(rng, 0, 4999)},
            {"train/loss": _series(rng, 3, 4100, gap=(1000, 1900), bad=[(100, inf)])},
            {"train/loss": _series(rng, 50, 5200, bad=[(s, nan) for s in range(3000, 3400)]),
             "test/acc": _series(rng, 10, 3000)},
        ],
        [  # group 1: four runs
            {"train/loss": _series(rng, 0, 5100)},
            {"train/loss": _series(rng, 0, 2500, bad=[(7, nan)])},
            {"train/loss": _series(rng, 700, 5300, gap=(2400, 4000))},
            {"train/loss": {s: (inf if s % 2 else -inf) for s in range(4500, 4700)}
             | _series(rng, 0, 300)},
        ],
    ]
    stored = [[_store(engine, run) for run in g] for g in raw]
    keys = ("train/loss", "test/acc")
    points = [{k: [run[k] for run in g if k in run] for k in keys} for g in raw]
    ids = [{k: [run[k] for run in g if k in run] for k in keys} for g in stored]
    return points, ids


CASES = [
    # (since, until, max_points): bucketed over rollups, edges mid-bucket, raw, one step
    (None, None, 20),
    (None, None, 150),
    (123, 4567, 30),
    (2990, 3450, 1000),  # raw: a bucket per step, through the all-NaN stretch of a run
    (4400, 4800, 50),  # level 0 buckets: everything raw but bucketed
    (4999, 4999, 5),
    (6000, 7000, 10),  # nothing there
]


@pytest.mark.parametrize(("center", "band"), [("median", "minmax"), ("mean", "std"),
                                              ("median", "std")])
def test_grouped_reads_equal_brute_force(engine, arranged, center, band):
    points, ids = arranged
    for since, until, max_points in CASES:
        got = _read(engine, ids, since, until, max_points, center, band)
        want = _brute(points, since, until, max_points, center, band)
        if got is None:
            assert all(not rows for g in want for rows in g.values())
            continue
        _check(got, want)


def test_the_grid_is_shared_by_groups_and_keys(engine, arranged):
    points, ids = arranged
    got = _read(engine, ids, None, None, 40, "median", "minmax")
    width = plan_buckets(0, 5300, 40)[1]
    for g in got:
        for s in g.values():
            buckets = [int(step) // width for step in s.steps]
            assert buckets == sorted(set(buckets))  # one entry per bucket, in order
            assert len(buckets) <= 40


def test_a_bucket_where_one_run_has_no_point_counts_the_others(engine):
    a = _store(engine, {"k": {0: 1.0, 1: 2.0, 5: 10.0}})
    b = _store(engine, {"k": {0: 3.0, 5: math.nan}})
    c = _store(engine, {"k": {0: 8.0, 1: 4.0}})
    got = _read(engine, [{"k": [a["k"], b["k"], c["k"]]}], None, None, 100, "median",
                "minmax")[0]["k"]
    assert got.steps == [0, 1, 5]
    assert got.center == [3.0, 3.0, 10.0]  # odd: the middle one; even: the middle two's mean
    assert (got.lo, got.hi) == ([1.0, 2.0, 10.0], [8.0, 4.0, 10.0])
    assert got.n == [3, 2, 1] and got.nonfinite == [0, 0, 1]


def test_huge_and_tiny_values_are_data_not_errors(engine):
    """PostgreSQL raises on float overflow and underflow where IEEE gives inf or 0: the
    statement must not (a 500 for a diverged run's metrics)."""
    big, tiny = 1.7e308, 5e-324
    runs = [_store(engine, {"k": {0: big, 1: tiny, 2: -big, 3: 1e-200}}),
            _store(engine, {"k": {0: big, 1: tiny, 2: big, 3: 3e-200}}),
            _store(engine, {"k": {0: big, 1: -tiny, 2: 1.0, 3: 2e-200}})]
    for center, band in (("median", "std"), ("mean", "minmax")):
        got = _read(engine, [{"k": [r["k"] for r in runs]}], None, None, 100, center,
                    band)[0]["k"]
        assert got.n == [3, 3, 3, 3]
        assert got.center[3] == pytest.approx(2e-200)
        if center == "median":
            # (the mean of three of them overflows, as numpy's; PostgreSQL sums values
            # past 1e300 through numeric, 15 digits: float_sums)
            assert got.center[0] == pytest.approx(big, rel=1e-14)
    assert got.lo[1] == -tiny and got.hi[1] == tiny
