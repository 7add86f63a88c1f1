"""SqlSink on SQLite and PostgreSQL: batches by count and by time, non-finite values kept,
re-inserts that duplicate nothing, and rows kept when a write fails."""

from __future__ import annotations

import math
import threading
import time

import pytest
from sqlalchemy import func, select

from server.db.models import NAN, NEG_INF, POS_INF, DistributionRecord, Point, ProbeRecord
from server.db.session import make_engine
from worker.engine.sink import Distribution, EtaRecord
from worker.sql_sink import SqlSink


@pytest.fixture
def engine(migrated_db_url):
    e = make_engine(migrated_db_url)
    yield e
    e.dispose()


@pytest.fixture
def run_id(migrated_db_url, make_run, spec_factory):
    return make_run(migrated_db_url, spec_factory())


def n_points(engine) -> int:
    with engine.connect() as c:
        return c.scalar(select(func.count()).select_from(Point))


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_a_full_batch_is_written_by_the_writer_thread_at_once(engine, run_id):
    sink = SqlSink(engine, run_id, flush_seconds=3600, flush_points=5)
    try:
        sink.scalars(0, {"a": 1.0, "b": 2.0})
        sink.scalars(1, {"a": 1.5, "b": 2.5})
        time.sleep(0.3)  # more than a timer period: nothing is due yet
        assert n_points(engine) == 0 and sink.pending() == 4
        sink.scalars(2, {"a": 3.0})  # the fifth row wakes the writer, long before the hour
        assert wait_for(lambda: sink.flushes == 1)
        assert n_points(engine) == 5 and sink.pending() == 0
        sink.scalars(3, {"a": 4.0})
        time.sleep(0.3)
        assert n_points(engine) == 5
    finally:
        sink.close()
    assert n_points(engine) == 6  # close writes the rest


def test_the_training_thread_writes_itself_when_the_writer_is_a_batch_behind(engine, run_id):
    sink = SqlSink(engine, run_id, flush_seconds=3600, flush_points=3)
    sink._write.acquire()  # the writer thread is stuck in a slow write
    try:
        sink.scalars(0, {"a": 1.0, "b": 2.0, "c": 3.0})  # one batch: handed to the writer
        assert sink.pending() == 3
        blocked = threading.Thread(
            target=sink.scalars, args=(1, {"a": 1.0, "b": 2.0, "c": 3.0}))
        blocked.start()  # two batches waiting: this call writes, so it waits for the lock
        blocked.join(0.3)
        assert blocked.is_alive()
    finally:
        sink._write.release()
    blocked.join(5)
    assert not blocked.is_alive() and wait_for(lambda: n_points(engine) == 6)
    sink.close()


def test_timer_thread_flushes_while_the_training_thread_is_busy(engine, run_id):
    sink = SqlSink(engine, run_id, flush_seconds=0.2, flush_points=10**6)
    try:
        sink.scalars(0, {"train/loss": 1.0})
        # No further call into the sink: only the timer thread can write this row.
        deadline = time.monotonic() + 5
        while n_points(engine) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert n_points(engine) == 1
        assert wait_for(lambda: sink.flushes == 1) and sink.pending() == 0
    finally:
        sink.close()


def test_non_finite_values_are_stored_with_their_flag(engine, run_id):
    sink = SqlSink(engine, run_id, flush_seconds=3600)
    sink.scalars(7, {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "ok": 0.5})
    sink.eta_records(7, "landscape", [EtaRecord(1.0, 0.1, math.nan, math.inf),
                                      EtaRecord(2.0, 0.2, 3.0, 4.0)])
    sink.distributions(7, [Distribution(
        layer=1, scope="unit", unit=3, lo=-6.0, hi=6.0, counts=[1, 2, 3, 4], underflow=1,
        overflow=0, nonfinite=2, mean=math.nan, var=math.inf,
        quantiles={"q01": -math.inf, "q50": 0.25})])
    sink.close()
    with engine.connect() as c:
        points = c.execute(select(Point.value, Point.flag)).all()
        etas = c.execute(select(ProbeRecord).order_by(ProbeRecord.multiplier)).all()
        dist = c.execute(select(DistributionRecord)).one()
    assert sorted(f for _, f in points) == [0, NAN, POS_INF, NEG_INF]
    assert all(v is None for v, f in points if f)
    assert (0.5, 0) in points
    assert math.isnan(etas[0].loss) and etas[0].grad_dist == math.inf
    assert (etas[1].loss, etas[1].grad_dist) == (3.0, 4.0)
    assert dist.stats == {"mean": "NaN", "var": "Infinity",
                          "quantiles": {"q01": "-Infinity", "q50": 0.25}}
    assert (dist.counts, dist.nonfinite, dist.unit, dist.scope) == ([1, 2, 3, 4], 2, 3, "unit")


def test_re_inserting_the_same_steps_duplicates_nothing(engine, run_id):
    first = SqlSink(engine, run_id)
    first.scalars(0, {"a": 1.0})
    first.eta_records(0, "landscape", [EtaRecord(1.0, 0.1, 5.0, 6.0)])
    first.close()
    again = SqlSink(engine, run_id)  # a redelivered task measuring the same steps again
    again.scalars(0, {"a": 99.0})
    again.scalars(1, {"a": 2.0})
    again.eta_records(0, "landscape", [EtaRecord(1.0, 0.1, 7.0, 8.0)])
    again.close()
    with engine.connect() as c:
        assert sorted(c.execute(select(Point.step, Point.value)).all()) == [(0, 1.0), (1, 2.0)]
        assert c.execute(select(ProbeRecord.loss)).scalars().all() == [5.0]


def test_a_failed_write_keeps_its_rows_for_the_next_flush(engine, run_id):
    sink = SqlSink(engine, run_id + 1000, flush_seconds=3600)  # no such run: FK violation
    sink.scalars(0, {"a": 1.0})
    with pytest.raises(Exception, match="(?i)foreign key"):
        sink.flush()
    assert sink.pending() == 1
    sink.run_id = run_id  # the cause goes away (for a real sink: the database comes back)
    sink.close()
    assert n_points(engine) == 1
