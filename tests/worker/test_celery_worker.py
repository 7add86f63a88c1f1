"""A real `landscope worker` subprocess (solo Celery worker) fed through a real broker.

Through Redis + PostgreSQL and through the embedded broker + SQLite: a run's metrics are in
the database while it trains and equal an in-process run's at the end; a second delivery of
the same run changes nothing; a running run is cancelled; the worker registers itself, and a
SIGTERM stops it promptly; a worker stopped mid-run checkpoints where it stopped and hands
the run back to the queue, and a second worker process resumes it at that step.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select, update

from server.db.migrate import upgrade
from server.db.models import Point, Run, Series, WorkerRecord
from server.db.session import make_engine
from server.queue import make_celery, queue_for, send_run
from server.settings import Settings
from worker.engine.checkpoint import DirectoryCheckpointStore
from worker.runner import checkpoint_dir

pytestmark = pytest.mark.slow

# Long enough that the worker's sink (flushing every 0.2 s) writes several batches before the
# run ends, however fast the engine gets: 300 steps once ended in one flush after the engine's
# per-step overheads were cut.
STEPS = 2000


class Service:
    """The test's side of a deployment: the database and a producer for the broker."""

    def __init__(self, tmp_path, db_url: str, redis, service_env) -> None:
        """`redis`: the test's RedisSpace, or None for the embedded broker."""
        upgrade(db_url)
        self.url = db_url
        self.engine = make_engine(db_url)
        broker = redis.settings() if redis else {}
        self.settings = Settings(data_dir=tmp_path, database_url=db_url, **broker)
        self.celery = make_celery(self.settings)
        self.env = service_env(data_dir=tmp_path, database_url=db_url, worker_device="cpu",
                               sink_flush_seconds=0.2, heartbeat_seconds=0.5, **broker)

    def submit(self, make_run, spec) -> int:
        run_id = make_run(self.url, spec)
        send_run(self.celery, run_id, queue_for(spec.device))
        return run_id

    def status(self, run_id: int) -> tuple[str, int, int]:
        """(status, step, points stored so far)."""
        with self.engine.connect() as c:
            status, step = c.execute(select(Run.status, Run.step).where(Run.id == run_id)).one()
            n = c.scalar(select(func.count()).select_from(Point).join(
                Series, Series.id == Point.series_id).where(Series.run_id == run_id))
        return status, step, n

    def cancel(self, run_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(update(Run).where(Run.id == run_id).values(cancel_requested=True))

    def worker_row(self, name_prefix: str) -> WorkerRecord | None:
        with self.engine.connect() as c:
            return c.execute(select(WorkerRecord).where(WorkerRecord.name.like(name_prefix + "%"))
                             ).first()

    def close(self) -> None:
        self.celery.close()
        self.engine.dispose()


@pytest.fixture
def service_factory(tmp_path):
    made = []

    def make(db_url, redis, service_env):
        made.append(Service(tmp_path, db_url, redis, service_env))
        return made[-1]

    yield make
    for s in made:
        s.close()


def train_and_watch(svc: Service, run_id: int, waiter, timeout: float = 90) -> bool:
    """Wait for the run to end; True if points were readable while it was still running."""
    seen_live = False

    def finished() -> bool:
        nonlocal seen_live
        status, _step, n = svc.status(run_id)
        seen_live |= status == "running" and n > 0
        return status not in ("queued", "running")

    waiter(finished, timeout, interval=0.05, what=f"run {run_id} to finish")
    return seen_live


def check_the_whole_service(svc, workers, make_run, spec_factory, stored, memory_reference,
                            same_metrics, waiter) -> None:
    worker = workers.start(svc.env, "e2e")
    spec = spec_factory(steps=STEPS)
    mem = memory_reference(spec)  # trained here while the worker starts up

    run_id = svc.submit(make_run, spec)
    assert train_and_watch(svc, run_id, waiter), "no metrics were readable during the run"
    got = stored(svc.url, run_id)
    assert (got.run.status, got.run.step, got.run.attempts) == ("succeeded", STEPS, 1)
    same_metrics(got, mem, rel=1e-5)

    # The same message again (a redelivery): the run is left alone, nothing is added.
    send_run(svc.celery, run_id, queue_for(spec.device))
    waiter(lambda: "skipped: already succeeded" in workers.log(worker), 30,
           what="the second delivery")
    again = stored(svc.url, run_id)
    assert again.points == got.points and again.run.attempts == 1

    long_id = svc.submit(make_run, spec_factory(steps=100_000))
    waiter(lambda: svc.status(long_id)[1] >= 20, 60, what="the long run to train")
    waiter(lambda: svc.worker_row("test-e2e").current_run_id == long_id, 10,
           what="the workers table to show the run")
    cancelled_at = time.monotonic()
    svc.cancel(long_id)
    waiter(lambda: svc.status(long_id)[0] == "cancelled", 10, what="the cancel")
    assert time.monotonic() - cancelled_at < 5
    assert svc.status(long_id)[1] < 100_000

    row = svc.worker_row("test-e2e")
    assert row is not None and row.device == "cpu" and row.stopped_at is None
    assert row.queues == ["landscope.any", "landscope.cpu"]
    assert workers.stop(worker) < 10
    assert svc.worker_row("test-e2e").stopped_at is not None


def test_redis_and_postgresql(pg_url, redis_space, service_factory, service_env, workers,
                              make_run, spec_factory, stored, memory_reference, same_metrics,
                              waiter):
    svc = service_factory(pg_url, redis_space, service_env)
    check_the_whole_service(svc, workers, make_run, spec_factory, stored, memory_reference,
                            same_metrics, waiter)


def test_embedded_broker_and_sqlite(sqlite_url, service_factory, service_env, workers,
                                    make_run, spec_factory, stored, memory_reference,
                                    same_metrics, waiter):
    svc = service_factory(sqlite_url, None, service_env)
    check_the_whole_service(svc, workers, make_run, spec_factory, stored, memory_reference,
                            same_metrics, waiter)


@pytest.mark.parametrize("backend", ["embedded+sqlite", "redis+postgresql"])
def test_a_stopped_worker_hands_its_run_to_the_next_one(
    backend, request, service_factory, service_env, workers, make_run, spec_factory, stored,
    memory_reference, same_metrics, waiter
):
    if backend == "embedded+sqlite":
        svc = service_factory(request.getfixturevalue("sqlite_url"), None, service_env)
    else:
        svc = service_factory(request.getfixturevalue("pg_url"),
                              request.getfixturevalue("redis_space"), service_env)
    first = workers.start(svc.env, "first")
    steps = 2 * STEPS  # long enough that the stop lands mid-run on a fast machine too
    spec = spec_factory(steps=steps, checkpoint_every=20)
    run_id = svc.submit(make_run, spec)
    waiter(lambda: svc.status(run_id)[1] >= 30, 60, what="the run to train")
    assert workers.stop(first) < 10  # warm shutdown (SIGTERM), mid-run
    status, step, _ = svc.status(run_id)
    assert status == "queued" and step < steps
    # Checkpointed at the step where it stopped (a stop between two periodic checkpoints
    # leaves one of its own), so nothing is trained twice.
    assert DirectoryCheckpointStore(checkpoint_dir(svc.settings, run_id)).latest_step() == step
    second = workers.start(svc.env, "second")  # the requeued message reaches it
    train_and_watch(svc, run_id, waiter)
    got = stored(svc.url, run_id)
    assert (got.run.status, got.run.step, got.run.attempts) == ("succeeded", steps, 2)
    assert got.run.worker.startswith("test-second")
    assert f"run {run_id}: trained from step {step} to step {steps} (succeeded)" in \
        workers.log(second)
    # Checkpointing changes no measurement: the run equals one uninterrupted run.
    same_metrics(got, memory_reference(spec_factory(steps=steps)), rel=1e-5)
