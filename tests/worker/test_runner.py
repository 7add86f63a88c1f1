"""worker.runner without Celery: one run by id, against a real database (SQLite, PostgreSQL).

Each outcome (succeeded, diverged, failed, cancelled), the duplicate-delivery and takeover
rules, the fence that stops a worker whose run was taken over, and the shutdown hand-back.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import delete, select, update

from server.db.migrate import upgrade
from server.db.models import NAN, Point, Run, Series, utcnow
from server.db.session import make_engine
from server.services.views import x_axis as recorded_x_axis
from server.settings import Settings
from worker.engine.checkpoint import DirectoryCheckpointStore
from worker.engine.trainer import Trainer
from worker.runner import (
    DEFAULT_CHECKPOINT_EVERY,
    ERROR_CHARS,
    REQUEUE,
    checkpoint_dir,
    effective_spec,
    error_summary,
    execute_run,
    stale_after,
)
from worker.sql_sink import SqlSink

WORKER = "test@host"


def _env(url, tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=url, sink_flush_seconds=0.2,
                        heartbeat_seconds=0.5)
    return SimpleNamespace(url=url, settings=settings, engine=make_engine(url))


@pytest.fixture
def env(migrated_db_url, tmp_path):
    e = _env(migrated_db_url, tmp_path)
    yield e
    e.engine.dispose()


@pytest.fixture
def sqlite_env(sqlite_url, tmp_path):
    upgrade(sqlite_url)
    e = _env(sqlite_url, tmp_path)
    yield e
    e.engine.dispose()


def execute(env, run_id, **kw) -> str:
    return execute_run(run_id, settings=env.settings, engine=env.engine, worker=WORKER,
                       device="cpu", **kw)


def row(env, run_id) -> Run:
    with env.engine.connect() as c:
        return c.execute(select(Run).where(Run.id == run_id)).one()


def set_row(env, run_id, **values) -> None:
    with env.engine.begin() as c:
        c.execute(update(Run).where(Run.id == run_id).values(**values))


def in_thread(fn, *args, **kw):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn(*args, **kw)), daemon=True)
    t.start()
    return t, out


def test_a_run_succeeds_with_exactly_the_metrics_of_an_in_process_run(
    env, make_run, spec_factory, stored, memory_reference, same_metrics
):
    spec = spec_factory()
    run_id = make_run(env.url, spec)
    assert execute(env, run_id) == "succeeded"
    got = stored(env.url, run_id)
    r = got.run
    assert (r.status, r.step, r.total, r.attempts, r.worker, r.device) == (
        "succeeded", 60, 60, 1, WORKER, "cpu")
    assert r.error is None and r.info["device"] == "cpu" and r.diverged_at is None
    assert r.started_at <= r.finished_at and r.heartbeat_at is not None
    mem = memory_reference(spec)
    assert r.last_loss == mem.values("train/loss")[-1]
    same_metrics(got, mem)
    assert not checkpoint_dir(env.settings, run_id).exists()  # nothing left to resume


def test_a_diverging_run_ends_diverged_and_keeps_its_non_finite_points(
    env, make_run, spec_factory, stored, memory_reference, same_metrics
):
    spec = spec_factory(lr=10.0)
    run_id = make_run(env.url, spec)
    assert execute(env, run_id) == "diverged"
    got = stored(env.url, run_id)
    assert got.run.status == "diverged" and got.run.diverged_at == 2 and got.run.step == 3
    assert math.isnan(got.run.last_loss)
    assert got.points[("train/loss", 2)] == (None, NAN)
    same_metrics(got, memory_reference(spec))


def test_a_run_whose_data_is_missing_fails_with_a_readable_error(
    sqlite_env, make_run, spec_factory, stored
):
    spec = spec_factory(model="vgg", dataset="cifar10", loss="cross_entropy", width=0.125)
    run_id = make_run(sqlite_env.url, spec)
    assert execute(sqlite_env, run_id) == "failed"
    got = stored(sqlite_env.url, run_id)
    assert got.run.status == "failed" and got.run.finished_at is not None
    assert got.run.error.startswith("DataError: ")
    assert "cifar-10-python.tar.gz" in got.run.error
    assert "in load_cifar10" in got.run.error  # the innermost frame
    assert got.n_points == 0


def test_cancel_stops_a_running_run_at_its_next_steps(
    env, make_run, spec_factory, stored, waiter
):
    run_id = make_run(env.url, spec_factory(steps=100_000))
    thread, out = in_thread(execute, env, run_id)
    waiter(lambda: row(env, run_id).step >= 20, 30, what="the run to train")
    set_row(env, run_id, cancel_requested=True)
    thread.join(10)
    assert out["v"] == "cancelled"
    got = stored(env.url, run_id)
    assert got.run.status == "cancelled" and got.run.finished_at is not None
    assert 20 <= got.run.step < 100_000
    assert sorted(got.series("train/loss")) == list(range(got.run.step))


def test_the_run_says_its_x_axis_as_training_starts_and_its_wall_time_sparsely(
    sqlite_env, make_run, spec_factory, stored, waiter
):
    """RunOut.x_axis while the run trains (the trainer's batch and training set as loaded),
    kept by the final write; time/wall_s sparse and monotone."""
    env = sqlite_env
    run_id = make_run(env.url, spec_factory(steps=100_000, batch_size=16))
    set_row(env, run_id, info={"earlier": 1})  # whatever else info holds is kept
    thread, out = in_thread(execute, env, run_id)
    waiter(lambda: row(env, run_id).step >= 5, 30, what="the run to train")
    x_axis = {"batch_size": 16, "train_size": 200}  # TINY: 200 gaussian samples
    info = row(env, run_id).info  # with the size and environment recorded at the same time
    assert info["earlier"] == 1 and info["x_axis"] == x_axis and "environment" in info
    assert recorded_x_axis(stored(env.url, run_id).run) == x_axis
    set_row(env, run_id, cancel_requested=True)
    thread.join(30)
    assert out["v"] == "cancelled"
    got = stored(env.url, run_id)
    assert recorded_x_axis(got.run) == x_axis and got.run.info["device"] == "cpu"
    wall = got.series("time/wall_s")
    assert 0 in wall and max(wall) == got.run.step - 1  # the first and the last step trained
    assert [wall[s] for s in sorted(wall)] == sorted(wall.values())
    # a point per 1,000 steps and per checkpoint (500): never one per step
    assert len(wall) <= 2 + got.run.step // 500 + got.run.step // 1000


def test_a_full_batch_run_has_no_batch_size(sqlite_env, make_run, spec_factory, stored):
    run_id = make_run(sqlite_env.url, spec_factory(steps=3, eval_every=0))
    assert execute(sqlite_env, run_id) == "succeeded"
    run = stored(sqlite_env.url, run_id).run
    assert recorded_x_axis(run) == {"batch_size": None, "train_size": 200}
    assert sorted(stored(sqlite_env.url, run_id).series("time/wall_s")) == [0, 1, 2, 3]


def test_a_running_run_with_a_fresh_heartbeat_is_a_duplicate_delivery(
    sqlite_env, make_run, spec_factory, stored
):
    now = utcnow()
    run_id = make_run(sqlite_env.url, spec_factory(), status="running", worker="other@host",
                      attempts=1, heartbeat_at=now - timedelta(seconds=10), started_at=now)
    assert execute(sqlite_env, run_id).startswith("skipped: duplicate delivery")
    got = stored(sqlite_env.url, run_id)
    assert (got.run.status, got.run.worker, got.run.attempts) == ("running", "other@host", 1)
    assert got.n_points == 0


def test_finished_deleted_and_cancelled_runs_are_left_alone(
    sqlite_env, make_run, spec_factory, stored
):
    done = make_run(sqlite_env.url, spec_factory(), status="succeeded", step=60, attempts=1)
    assert execute(sqlite_env, done) == "skipped: already succeeded"
    assert stored(sqlite_env.url, done).run.attempts == 1
    assert execute(sqlite_env, 10_000) == "skipped: deleted"
    cancelled = make_run(sqlite_env.url, spec_factory(), cancel_requested=True)
    assert execute(sqlite_env, cancelled) == "skipped: cancelled before it started"
    got = stored(sqlite_env.url, cancelled)
    assert got.run.status == "cancelled" and got.run.attempts == 0 and got.n_points == 0


def test_a_stale_run_is_taken_over_and_resumes_from_its_checkpoint(
    env, make_run, spec_factory, stored, memory_reference, same_metrics
):
    spec = spec_factory(checkpoint_every=20)
    run_id = make_run(env.url, spec)
    # The first worker trained 30 steps (checkpoint at 20, metrics up to 29), then died.
    sink = SqlSink(env.engine, run_id)
    store = DirectoryCheckpointStore(checkpoint_dir(env.settings, run_id))
    Trainer(spec, env.settings.data_dir, "cpu").run(sink, checkpoints=store, max_steps=30)
    sink.close()
    set_row(env, run_id, status="running", worker="dead@host", attempts=1, step=30)
    # A point before the checkpoint, removed: a resumed run does not measure it again.
    with env.engine.begin() as c:
        sid = c.scalar(select(Series.id).where(Series.run_id == run_id,
                                               Series.key == "train/loss"))
        c.execute(delete(Point).where(Point.series_id == sid, Point.step == 5))

    stale = stale_after(env.settings)
    set_row(env, run_id, heartbeat_at=utcnow() - timedelta(seconds=stale - 5))
    assert execute(env, run_id).startswith("skipped: duplicate delivery")
    set_row(env, run_id, heartbeat_at=utcnow() - timedelta(seconds=stale + 5))
    assert execute(env, run_id) == "succeeded"

    got = stored(env.url, run_id)
    assert (got.run.status, got.run.attempts, got.run.worker, got.run.step) == (
        "succeeded", 2, WORKER, 60)
    assert ("train/loss", 5) not in got.points  # resumed at 20, not retrained from 0
    with env.engine.begin() as c:  # put it back: then everything equals one clean run
        mem = memory_reference(spec)
        c.execute(Point.__table__.insert().values(series_id=sid, step=5, flag=0,
                                                  value=mem.series["train/loss"][5]))
    same_metrics(stored(env.url, run_id), mem)


def test_a_worker_whose_run_was_taken_over_stops_without_writing(
    sqlite_env, make_run, spec_factory, stored, waiter
):
    env = sqlite_env
    run_id = make_run(env.url, spec_factory(steps=100_000))
    thread, out = in_thread(execute, env, run_id)
    waiter(lambda: row(env, run_id).step >= 10, 30, what="the run to train")
    set_row(env, run_id, attempts=2, worker="thief@host")  # what a takeover's claim writes
    thread.join(10)
    assert out["v"] == "lost"
    r = stored(env.url, run_id).run
    assert (r.status, r.worker, r.attempts, r.finished_at) == ("running", "thief@host", 2, None)


def test_worker_shutdown_hands_the_run_back_and_the_next_worker_resumes_it(
    sqlite_env, make_run, spec_factory, stored, memory_reference, same_metrics, caplog
):
    env = sqlite_env
    spec = spec_factory(steps=400, checkpoint_every=20)
    run_id = make_run(env.url, spec)
    store = DirectoryCheckpointStore(checkpoint_dir(env.settings, run_id))

    class ShutdownBeforeStep47(threading.Event):
        """The worker is told to stop before step 47, counted in the run's own polls (one a
        step) after its checkpoint at 40, not in time: a fast machine trains all 400 steps
        between two polls of a clock. 47 is no checkpoint step: only the stop's own
        checkpoint can resume there."""

        polls = 0

        def is_set(self) -> bool:
            if not super().is_set() and store.latest_step() >= 40:
                self.polls += 1
                if self.polls > 7:
                    self.set()
            return super().is_set()

    thread, out = in_thread(execute, env, run_id, shutdown=ShutdownBeforeStep47())
    thread.join(60)
    assert out["v"] == REQUEUE
    r = row(env, run_id)
    assert (r.status, r.worker, r.heartbeat_at, r.finished_at) == ("queued", None, None, None)
    assert r.step == store.latest_step() == 47  # checkpointed where it stopped
    with caplog.at_level(logging.INFO, logger="worker.runner"):
        assert execute(env, run_id) == "succeeded"
    assert f"run {run_id}: trained from step 47 to step 400 (succeeded)" in caplog.messages
    got = stored(env.url, run_id)
    assert got.run.attempts == 2 and got.run.step == 400
    same_metrics(got, memory_reference(spec))  # time/wall_s monotone across the hand-back
    wall = got.series("time/wall_s")
    assert 47 in wall and wall[47] > wall[46]  # resumed at 47, counting on from 46's time



def test_error_summary_names_the_exception_and_its_innermost_frames():
    def inner(message):
        raise ValueError(message)

    for message in ("short", "boom " + "x" * 10_000):
        try:
            inner(message)
        except ValueError as exc:
            text = error_summary(exc)
        assert text.startswith(f"ValueError: {message[:100]}") and len(text) <= ERROR_CHARS
        assert 'in inner\n    raise ValueError(message)' in text  # the frame that raised


def test_the_worker_checkpoints_a_run_whose_spec_does_not_say(spec_factory):
    assert effective_spec(spec_factory()).checkpoint_every == DEFAULT_CHECKPOINT_EVERY
    own = spec_factory(checkpoint_every=7)
    assert effective_spec(own) == own
    changed = effective_spec(spec_factory()).model_dump()
    assert changed == {**spec_factory().model_dump(), "checkpoint_every": DEFAULT_CHECKPOINT_EVERY}


def test_a_heartbeat_is_stale_after_ten_beats_and_never_under_thirty_seconds(tmp_path):
    assert stale_after(Settings(data_dir=tmp_path, heartbeat_seconds=2)) == 30
    assert stale_after(Settings(data_dir=tmp_path, heartbeat_seconds=10)) == 100
