"""Analyses on real `landscope worker` subprocesses, on both brokers (embedded + SQLite, Redis
+ PostgreSQL): a worker trains a run then analyses it, equal to the in-process reference; a
worker killed in the middle of a surface loses no point once another takes over.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.db.models import AnalysisPoint
from server.queue import make_celery, send_analysis_prepare, send_run
from server.services.analysis_reconcile import reconcile_analyses
from server.spec import build_spec
from tests.worker.analysis_env import RUN, SURFACE, Env, as_points, same_points

STALE = 2.0  # seconds of silence that make an analysis's worker dead, for these tests


class Service(Env):
    def __init__(self, tmp_path: Path, db_url: str, redis, service_env) -> None:
        broker = redis.settings() if redis else {
            "broker_url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"}
        super().__init__(tmp_path, db_url, **broker)
        self.settings = self.settings.model_copy(update={"stale_seconds": STALE})
        self.celery = make_celery(self.settings)
        self.env = service_env(data_dir=tmp_path, database_url=db_url, worker_device="cpu",
                               heartbeat_seconds=0.2, stale_seconds=STALE, **broker)

    def train_on_worker(self, make_run, waiter) -> int:
        spec = build_spec(RUN)
        run_id = make_run(self.url, spec)
        send_run(self.celery, run_id, "landscope.cpu")
        waiter(lambda: self.run_status(run_id) == "succeeded", 120, what="the run")
        return run_id

    def run_status(self, run_id: int) -> str:
        from server.db.models import Run

        with self.engine.connect() as c:
            return c.scalar(select(Run.status).where(Run.id == run_id))

    def submit(self, run_id: int, **spec) -> int:
        a = self.create(run_id, **spec)
        send_analysis_prepare(self.celery, a.id, a.queue)
        return a.id

    def count(self, analysis_id: int) -> int:
        with self.engine.connect() as c:
            return c.scalar(select(func.count()).select_from(AnalysisPoint)
                            .where(AnalysisPoint.analysis_id == analysis_id))

    def close(self) -> None:
        self.celery.close()
        super().close()


@pytest.fixture
def services(tmp_path):
    made = []

    def make(db_url, redis, service_env):
        made.append(Service(tmp_path, db_url, redis, service_env))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _backend(request, name):
    if name == "embedded+sqlite":
        return request.getfixturevalue("sqlite_url"), None
    return request.getfixturevalue("pg_url"), request.getfixturevalue("redis_space")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["embedded+sqlite", "redis+postgresql"])
def test_a_worker_trains_then_analyses(backend, request, services, service_env, workers,
                                       make_run, waiter):
    svc = services(*_backend(request, backend), service_env)
    workers.start(svc.env, "analyst")
    run_id = svc.train_on_worker(make_run, waiter)
    spec = {**SURFACE, "steps": [0, 30], "test_set": True}
    analysis_id = svc.submit(run_id, **spec)
    waiter(lambda: svc.analysis(analysis_id).status not in ("queued", "running"), 120,
           what="the analysis")
    a = svc.analysis(analysis_id)
    assert (a.status, a.done_points, a.error) == ("succeeded", 40, None)
    assert a.worker.startswith("test-analyst")
    same_points(svc.points(analysis_id), as_points(svc.reference(run_id, spec)), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["embedded+sqlite", "redis+postgresql"])
def test_a_worker_killed_in_the_middle_of_a_surface_loses_no_point(
        backend, request, services, service_env, workers, make_run, waiter):
    svc = services(*_backend(request, backend), service_env)
    first = workers.start(svc.env, "doomed")
    run_id = svc.train_on_worker(make_run, waiter)
    spec = {**SURFACE, "x": {"points": 15}, "y": {"points": 15}, "eval_samples": 256}
    total = 225
    analysis_id = svc.submit(run_id, **spec)
    waiter(lambda: svc.count(analysis_id) >= 16, 120, interval=0.01,
           what="some chunks to be stored")
    os.killpg(first.pid, signal.SIGKILL)  # mid-surface: no warm shutdown, no hand-back
    first.wait(10)
    stored = svc.count(analysis_id)
    assert 16 <= stored < total and svc.analysis(analysis_id).status == "running"

    workers.start(svc.env, "rescuer")

    def reconciled() -> bool:  # as the API's timer does
        reconcile_analyses(svc.factory, svc.celery, svc.settings, grace=0.0)
        return svc.analysis(analysis_id).status != "running"

    waiter(reconciled, 180, interval=0.5, what="the surface to complete")
    a = svc.analysis(analysis_id)
    assert (a.status, a.done_points, a.total_points) == ("succeeded", total, total)
    got = svc.points(analysis_id)
    assert sorted(got) == [(30, i) for i in range(total)]  # every point, each once (the key)
    same_points(got, as_points(svc.reference(run_id, spec)), rel=1e-5)
