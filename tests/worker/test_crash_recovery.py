"""kill -9 a worker mid-run: the reconciler sees its heartbeat go stale, puts the run back in
the queue and sends it; another worker process resumes it from its last checkpoint, and the
final metrics equal those of an uninterrupted run (no duplicate and no missing step).

Also the broker losing its messages: Redis flushed while runs are queued; the reconciler
sends every queued run again and a worker finishes them all. Real PostgreSQL, Redis (under
this test's own key prefix) and `landscope worker` subprocesses.
"""

from __future__ import annotations

import os
import signal

import pytest

from server.db.session import make_sessionmaker
from server.services.reconcile import reconcile
from server.settings import Settings

from .test_celery_worker import STEPS, service_factory, train_and_watch  # noqa: F401

pytestmark = pytest.mark.slow
STALE = 3.0  # seconds of silence that make a worker dead, for this test


@pytest.fixture
def svc(pg_url, redis_space, service_factory, service_env, tmp_path):  # noqa: F811
    service = service_factory(pg_url, redis_space, service_env)
    service.env["LANDSCOPE_STALE_SECONDS"] = str(STALE)
    service.settings = Settings(data_dir=tmp_path, database_url=pg_url, stale_seconds=STALE,
                                **redis_space.settings())
    return service


def reconcile_until(svc, predicate, waiter, what: str):
    """Run reconciler passes (as the API does on its timer) until `predicate` holds."""
    factory = make_sessionmaker(svc.engine)

    def once():
        reconcile(factory, svc.celery, svc.settings, grace=0.0)
        return predicate()

    return waiter(once, 180, interval=0.5, what=what)


def test_a_killed_worker_s_run_resumes_elsewhere_with_identical_metrics(
    svc, workers, make_run, spec_factory, stored, memory_reference, same_metrics, waiter
):
    first = workers.start(svc.env, "doomed")
    steps = 2 * STEPS
    spec = spec_factory(steps=steps, checkpoint_every=25)
    run_id = svc.submit(make_run, spec)
    waiter(lambda: svc.status(run_id)[1] >= 60, 180, what="the run to pass a checkpoint")
    os.killpg(first.pid, signal.SIGKILL)  # no warm shutdown, no hand-back: just gone
    first.wait(10)
    status, step, _ = svc.status(run_id)
    assert status == "running" and step < steps  # the database still believes in it

    workers.start(svc.env, "rescuer")
    reconcile_until(svc, lambda: svc.status(run_id)[0] != "running", waiter,
                    "the reconciler to requeue the silent worker's run")
    train_and_watch(svc, run_id, waiter, timeout=300)
    got = stored(svc.url, run_id)
    assert (got.run.status, got.run.step, got.run.attempts) == ("succeeded", steps, 2)
    assert got.run.worker.startswith("test-rescuer")
    same_metrics(got, memory_reference(spec), rel=1e-5)


def test_runs_queued_when_redis_is_flushed_are_sent_again_and_finish(
    svc, workers, make_run, spec_factory, stored, memory_reference, same_metrics, waiter,
    redis_space
):
    spec = spec_factory(steps=40)
    ids = [svc.submit(make_run, spec) for _ in range(3)]
    assert redis_space.clear() > 0  # the broker forgets (its keys only); the database does not
    reconcile_until(svc, lambda: True, waiter, "a reconciler pass")
    workers.start(svc.env, "after-flush")
    for run_id in ids:
        train_and_watch(svc, run_id, waiter, timeout=300)
    mem = memory_reference(spec)
    for run_id in ids:
        got = stored(svc.url, run_id)
        assert got.run.status == "succeeded"
        same_metrics(got, mem, rel=1e-5)
