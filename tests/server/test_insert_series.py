"""insert_series (server/db/metrics.py) on SQLite and PostgreSQL: raw floats in, exact rows and
rollups out, whatever the redelivery, the batch shape or the non-finite values."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pytest
from sqlalchemy import insert, select

from server.db.metrics import insert_series, read_series, run_keys
from server.db.models import FINITE, ROLLUP_BASE, ROLLUP_LEVELS, Point, Rollup, Run
from server.db.session import make_engine


@pytest.fixture
def engine(migrated_db_url):
    e = make_engine(migrated_db_url)
    yield e
    e.dispose()


def _new_run(engine) -> int:
    with engine.begin() as c:
        return c.execute(
            insert(Run).values(name="t", spec={}, queue="q", total=1)
        ).inserted_primary_key[0]


def _same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_rollups_exact(conn) -> None:
    """Every rollup row equals the aggregate of the raw points it covers, at every level,
    and no bucket without points has a row."""
    pts = conn.execute(select(Point.series_id, Point.step, Point.value, Point.flag)).all()
    want: dict[tuple[int, int, int], list] = defaultdict(list)
    for sid, step, value, flag in pts:
        for level in range(1, ROLLUP_LEVELS + 1):
            want[(sid, level, step // ROLLUP_BASE**level)].append((step, value, flag))
    got = {(r.series_id, r.level, r.bucket): r for r in conn.execute(select(Rollup))}
    assert set(got) == set(want)
    for k, items in want.items():
        r = got[k]
        fin = [v for _, v, f in items if f == FINITE]
        assert (r.n, r.n_bad) == (len(items), len(items) - len(fin)), k
        assert (r.step_min, r.step_max) == (min(s for s, *_ in items), max(s for s, *_ in items))
        if fin:
            assert r.vsum == pytest.approx(math.fsum(fin), rel=1e-9, abs=1e-9)
            assert (r.vmin, r.vmax) == (min(fin), max(fin))
        else:
            assert r.vsum is None and r.vmin is None and r.vmax is None


def test_round_trip_keeps_non_finite_values(engine):
    rid = _new_run(engine)
    vals = [1.5, math.nan, math.inf, -math.inf, -0.0, 1e308]
    with engine.begin() as c:
        n = insert_series(c, rid, {"train/loss": (range(6), vals), "lr": ([3], [0.1])})
    assert n == 7
    with engine.connect() as c:
        keys = run_keys(c, rid)
        assert set(keys) == {"train/loss", "lr"}
        got = read_series(c, keys["train/loss"], "train/loss")
        assert got.steps == list(range(6))
        assert all(_same(a, b) for a, b in zip(got.values, vals, strict=True))
        assert read_series(c, keys["lr"], "lr").values == [0.1]
        assert_rollups_exact(c)


def test_redelivery_and_overlap_change_nothing(engine):
    rid = _new_run(engine)
    rng = random.Random(1)
    steps = list(range(0, 9000, 1))
    vals = [rng.gauss(0, 1) if s % 97 else math.nan for s in steps]
    cols = {"a": (steps, vals), "b": (steps[::3], vals[::3])}
    with engine.begin() as c:
        insert_series(c, rid, cols)
    # Redelivered, partly overlapping, with other values: the first write wins.
    with engine.begin() as c:
        insert_series(c, rid, {"a": (steps[4000:9500], [7.0] * 5000),
                               "b": (list(range(8000, 12000)), [2.0] * 4000)})
    with engine.begin() as c:
        insert_series(c, rid, cols)
    with engine.connect() as c:
        keys = run_keys(c, rid)
        a = read_series(c, keys["a"], "a")
        assert a.steps == steps and all(_same(x, y) for x, y in zip(a.values, vals, strict=True))
        b = read_series(c, keys["b"], "b")
        assert b.steps == sorted(set(steps[::3]) | set(range(8000, 12000)))
        assert_rollups_exact(c)


def test_duplicate_steps_within_one_batch_store_one_point(engine):
    rid = _new_run(engine)
    with engine.begin() as c:
        assert insert_series(c, rid, {"k": ([5, 5, 6, 5], [1.0, 2.0, 3.0, 4.0])}) == 4
    with engine.connect() as c:
        got = read_series(c, run_keys(c, rid)["k"], "k")
        assert got.steps == [5, 6] and got.values[1] == 3.0
        assert got.values[0] in (1.0, 2.0, 4.0)
        assert_rollups_exact(c)


def test_unordered_sparse_and_large_steps(engine):
    rid = _new_run(engine)
    steps = [10**9, 0, 262_143, 262_144, 4095, 4096, 63, 64, 1]
    vals = [float(i) for i in range(len(steps))]
    with engine.begin() as c:
        insert_series(c, rid, {"k": (steps, vals)})
        insert_series(c, rid, {"k": ([2, 65, 10**9 + 1], [math.inf, -1.0, math.nan])})
    with engine.connect() as c:
        got = read_series(c, run_keys(c, rid)["k"], "k")
        assert got.steps == sorted(steps + [2, 65, 10**9 + 1])
        assert_rollups_exact(c)


def test_empty_input_and_bad_shapes(engine):
    rid = _new_run(engine)
    with engine.begin() as c:
        assert insert_series(c, rid, {}) == 0
        assert insert_series(c, rid, {"empty": ([], [])}) == 0
        assert run_keys(c, rid) == {}
    with engine.begin() as c, pytest.raises(ValueError, match="'k'"):
        insert_series(c, rid, {"k": ([1, 2], [1.0])})


def test_runs_are_kept_apart(engine):
    r1, r2 = _new_run(engine), _new_run(engine)
    with engine.begin() as c:
        insert_series(c, r1, {"k": (range(100), [1.0] * 100)})
        insert_series(c, r2, {"k": (range(50, 150), [2.0] * 100)})
    with engine.connect() as c:
        k1, k2 = run_keys(c, r1)["k"], run_keys(c, r2)["k"]
        assert k1 != k2
        assert read_series(c, k1, "k").values == [1.0] * 100
        assert read_series(c, k2, "k").steps == list(range(50, 150))
        assert_rollups_exact(c)


def test_steps_are_checked(engine):
    rid = _new_run(engine)
    for steps, match in [([1.5], "integers"), ([-1], r"\[0, "), ([2**31], r"\[0, "),
                         ([[1, 2]], "flat"), ([2**70], "integers")]:
        with engine.begin() as c, pytest.raises(ValueError, match=match):
            insert_series(c, rid, {"k": (steps, [1.0] * len(steps))})
    for values in (["x"], [[1.0]], [object()]):
        with engine.begin() as c, pytest.raises(ValueError, match="'k': values"):
            insert_series(c, rid, {"k": ([1], values)})
    with engine.begin() as c:
        assert insert_series(c, rid, {"k": ([0, 2**31 - 1], [1.0, 2.0])}) == 2
    with engine.connect() as c:
        assert read_series(c, run_keys(c, rid)["k"], "k").steps == [0, 2**31 - 1]
        assert_rollups_exact(c)


@pytest.mark.parametrize("migrated_db_url", ["postgresql"], indirect=True)
def test_copy_collision_falls_back_to_insert_ignore(engine, monkeypatch):
    """The newest-step probe is only a hint: when it is stale (a concurrent writer), COPY
    meets the primary key, the savepoint is rolled back and insert-ignore stores the batch."""
    from server.db import ingest_pg

    rid = _new_run(engine)
    with engine.begin() as c:
        insert_series(c, rid, {"k": (range(0, 300, 2), [1.0] * 150)})
    calls = []
    real = ingest_pg.newest_steps
    monkeypatch.setattr(ingest_pg, "newest_steps",
                        lambda cur, sids: calls.append(sids) or dict.fromkeys(sids))
    with engine.begin() as c:  # the caller's transaction survives the failed COPY
        insert_series(c, rid, {"k": (range(300), [2.0] * 300), "new": ([5], [math.nan])})
    assert calls
    monkeypatch.setattr(ingest_pg, "newest_steps", real)
    with engine.connect() as c:
        keys = run_keys(c, rid)
        got = read_series(c, keys["k"], "k")
        assert got.steps == list(range(300))
        assert got.values == [1.0 if s % 2 == 0 else 2.0 for s in range(300)]
        assert math.isnan(read_series(c, keys["new"], "new").values[0])
        assert_rollups_exact(c)


@pytest.mark.parametrize("migrated_db_url", ["postgresql"], indirect=True)
def test_concurrent_writers_of_one_series_stay_exact(engine):
    """Two transactions write the same steps; the second's COPY waits on the first's rows
    (seen in pg_stat_activity), then fails on them when it commits and falls back: nothing twice."""
    import threading
    import time

    rid = _new_run(engine)
    with engine.begin() as c:
        insert_series(c, rid, {"k": ([0], [0.0])})
    steps = list(range(1, 5000))
    first = engine.connect()
    tx = first.begin()
    insert_series(first, rid, {"k": (steps, [1.0] * len(steps))})
    errors: list[BaseException] = []

    def second():
        try:
            with engine.begin() as c:
                insert_series(c, rid, {"k": (steps + [6000], [2.0] * len(steps) + [3.0])})
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=second)
    t.start()
    deadline = time.monotonic() + 60
    with engine.connect() as watch:  # wait for the event "second is blocked on a lock"
        while True:
            blocked = watch.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).scalar()
            watch.rollback()  # pg_stat_activity is a snapshot per transaction: take a new one
            if blocked:
                break
            assert time.monotonic() < deadline and t.is_alive(), ("never blocked", errors)
            time.sleep(0.01)
    tx.commit()
    first.close()
    t.join(60)
    assert not t.is_alive() and not errors, errors
    with engine.connect() as c:
        got = read_series(c, run_keys(c, rid)["k"], "k")
        assert got.steps == [0, *steps, 6000]
        assert got.values == [0.0] + [1.0] * len(steps) + [3.0]
        assert_rollups_exact(c)


def test_random_redeliveries_match_a_first_write_wins_model(engine):
    """Batches of random, overlapping step ranges over several keys, some sent twice: the
    stored points are the first value written for each (key, step), rollups exact."""
    rng = random.Random(7)
    rid = _new_run(engine)
    model: dict[str, dict[int, float]] = {}
    sent = []
    for _ in range(25):
        cols = {}
        for key in rng.sample(["a", "b", "c", "d"], rng.randint(1, 4)):
            lo = rng.randrange(0, 20_000)
            steps = list(range(lo, lo + rng.randrange(1, 3000), rng.choice([1, 1, 3])))
            rng.shuffle(steps)
            vals = [rng.choice([math.nan, math.inf, -math.inf]) if rng.random() < 0.02
                    else rng.uniform(-5, 5) for _ in steps]
            cols[key] = (steps, vals)
        batches = [cols] + ([rng.choice(sent)] if sent and rng.random() < 0.3 else [])
        for batch in batches:
            with engine.begin() as c:
                insert_series(c, rid, batch)
            for key, (steps, vals) in batch.items():
                for s, v in zip(steps, vals, strict=True):
                    model.setdefault(key, {}).setdefault(s, v)
        sent.append(cols)
    with engine.connect() as c:
        keys = run_keys(c, rid)
        assert set(keys) == set(model)
        for key, want in model.items():
            got = read_series(c, keys[key], key)
            assert got.steps == sorted(want)
            assert all(_same(v, want[s]) for s, v in zip(got.steps, got.values, strict=True))
        assert_rollups_exact(c)


@pytest.mark.parametrize("migrated_db_url", ["postgresql"], indirect=True)
def test_a_connection_lost_during_the_copy_is_a_transient_sqlalchemy_error(engine, monkeypatch):
    """The COPY runs on the driver's cursor; its errors must still reach callers as
    SQLAlchemy's, so that with_retries retries an outage and the pool drops the dead
    connection, as for any other statement."""
    from sqlalchemy.exc import OperationalError

    from server.db import ingest_pg
    from server.db.session import is_transient, with_retries

    rid = _new_run(engine)
    real = ingest_pg.copy_buffer
    kills = []

    def kill_own_backend_once(*a):
        if not kills:
            pid = kills.append(current[0]) or current[0]
            with engine.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
        return real(*a)

    current = [None]
    monkeypatch.setattr(ingest_pg, "copy_buffer", kill_own_backend_once)

    def write():
        with engine.begin() as c:
            current[0] = c.connection.dbapi_connection.info.backend_pid
            insert_series(c, rid, {"k": (range(1000), [1.0] * 1000)})

    c = engine.connect()
    c.begin()
    current[0] = c.connection.dbapi_connection.info.backend_pid
    with pytest.raises(OperationalError) as err:  # from the call itself, not a later rollback
        insert_series(c, rid, {"k": (range(1000), [1.0] * 1000)})
    assert is_transient(err.value) and err.value.connection_invalidated
    assert c.invalidated
    c.close()
    kills.clear()
    with_retries(write, deadline_s=30)  # killed once more, then written on the retry
    assert len(kills) == 1
    with engine.connect() as c:
        assert read_series(c, run_keys(c, rid)["k"], "k").steps == list(range(1000))
        assert_rollups_exact(c)
