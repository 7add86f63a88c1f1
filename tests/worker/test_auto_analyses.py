"""An experiment's analyses, created by the worker when a run succeeds: in the success's
transaction, once per run and entry however often the task is delivered, none for a run that
fails, diverges or is cancelled, sent after the commit (or by the reconciler when they could
not be); then a real `landscope worker` taking a paired experiment from training to every
surface and spectrum succeeded."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from server.db.migrate import upgrade
from server.db.models import Analysis, Run
from server.db.session import make_engine, make_sessionmaker, transaction
from server.queue import make_celery, send_run
from server.schemas import ExperimentCreate
from server.services.analysis_reconcile import reconcile_analyses, waiting_tasks
from server.services.auto_analyses import create_for_run
from server.services.experiments import create_experiment
from server.settings import Settings
from worker.analysis_runner import JobCache, prepare, run_chunk
from worker.runner import execute_run

# Two tiny classifiers on digits (no download), with and without BatchNorm.
BASE = {"model": "mlp", "depth": 3, "width": 16, "dataset": "digits", "lr": 0.3,
        "batch_size": 32, "steps": 30, "eval_every": 0, "device": "cpu",
        "snapshots": {"every": 10}, "probes": {"landscape": {"every": 0}}}
PAIRED = {"norm": ["none", "batch"]}
SURFACE = {"kind": "surface", "x": {"points": 3}, "y": {"points": 3}, "eval_samples": 128,
           "batch_size": 64, "chunk_points": 4, "directions": {"seed": 3}}
SPECTRUM = {"kind": "spectrum", "eval_samples": 128, "batch_size": 64,
            "spectrum": {"top_k": 2, "lanczos_steps": 6, "trace_probes": 4, "slq_steps": 6,
                         "slq_vectors": 2, "density_points": 32}}


class Env:
    def __init__(self, tmp_path: Path, db_url: str, **settings) -> None:
        upgrade(db_url)
        self.url = db_url
        self.engine = make_engine(db_url)
        self.factory = make_sessionmaker(self.engine)
        self.settings = Settings(_env_file=None, data_dir=tmp_path, database_url=db_url,
                                 heartbeat_seconds=0.2,
                                 broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
                                 **settings)

    def experiment(self, analyses=None, vary=PAIRED, **base) -> list[int]:
        """Posted as the API does; its run ids."""
        req = ExperimentCreate(base={**BASE, **base}, vary=vary, analyses=analyses)
        with self.factory() as s:
            exp, created = create_experiment(s, self.settings, req)
            s.commit()
            assert created
            return [r.id for r in exp.runs]

    def execute(self, run_id: int, **kw) -> str:
        return execute_run(run_id, settings=self.settings, engine=self.engine, worker="t",
                           device="cpu", **kw)

    def analyses(self, **where) -> list[Analysis]:
        with self.factory() as s:
            stmt = select(Analysis).order_by(Analysis.id)
            for k, v in where.items():
                stmt = stmt.where(getattr(Analysis, k) == v)
            return list(s.scalars(stmt))

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def env(tmp_path, sqlite_url):
    e = Env(tmp_path, sqlite_url)
    yield e
    e.close()


def test_a_run_that_succeeds_gets_its_experiment_s_analyses_once(env):
    runs = env.experiment(analyses=[SURFACE, SPECTRUM])
    assert env.execute(runs[0]) == "succeeded"
    first = env.analyses()
    assert [(a.run_id, a.auto_index, a.kind, a.status) for a in first] == [
        (runs[0], 0, "surface", "queued"), (runs[0], 1, "spectrum", "queued")]
    assert all(a.spec["steps"] == [30] and a.enqueued_at is None for a in first)
    assert [a.total_points for a in first] == [9, 0]
    # Delivered again: the run is finished, the task leaves it (and its analyses) alone.
    assert env.execute(runs[0]).startswith("skipped: already succeeded")
    # Even the creation itself, repeated (a success written twice), adds nothing...
    with transaction(env.factory) as s:
        assert create_for_run(s, env.settings, runs[0]) == []
    assert [a.id for a in env.analyses()] == [a.id for a in first]
    # ...and the database refuses a second row for one run and entry.
    with pytest.raises(IntegrityError), transaction(env.factory) as s:
        s.add(Analysis(run_id=runs[0], experiment_id=first[0].experiment_id, group_id=0,
                       auto_index=1, kind="spectrum", bn_mode="batch", spec={},
                       status="queued", queue="landscope.cpu", total_points=0))
    # The other run's analyses join the first run's groups: one colour scale per entry.
    assert env.execute(runs[1]) == "succeeded"
    second = env.analyses(run_id=runs[1])
    assert [(a.auto_index, a.group_id) for a in second] == [(0, first[0].id),
                                                           (1, first[1].id)]
    assert [a.group_id for a in first] == [first[0].id, first[1].id]


def test_runs_that_fail_diverge_or_are_cancelled_get_none(env):
    diverging, _ = env.experiment(  # test_runner.py's diverging deep linear net
        analyses=[SPECTRUM], model="dln", depth=4, width=8, dataset="gaussian_linear",
        n_samples=200, loss="sum_squares", batch_size=None, lr=10.0)
    assert env.execute(diverging) == "diverged"
    failing, _ = env.experiment(analyses=[SPECTRUM], dataset="cifar10")  # no CIFAR-10 here
    assert env.execute(failing) == "failed"
    cancelled, _ = env.experiment(analyses=[SPECTRUM])
    with transaction(env.factory) as s:
        s.get(Run, cancelled).cancel_requested = True
    assert env.execute(cancelled) == "skipped: cancelled before it started"
    assert env.analyses() == []


def test_no_analyses_without_an_experiment_or_with_an_empty_list(env, make_run):
    runs = env.experiment(analyses=[], vary={})
    assert env.execute(runs[0]) == "succeeded"
    from server.spec import build_spec

    alone = make_run(env.url, build_spec(BASE))  # POST /runs: no experiment
    assert env.execute(alone) == "succeeded"
    assert env.analyses() == []


def test_an_entry_that_no_longer_fits_is_saved_failed_with_its_reason(env):
    runs = env.experiment(analyses=[SURFACE, SPECTRUM], vary={})
    # The server's limits were lowered after the experiment was accepted.
    env.settings = env.settings.model_copy(update={"max_analysis_points": 4})
    assert env.execute(runs[0]) == "succeeded"
    surface, spectrum = env.analyses()
    assert (surface.status, surface.auto_index, surface.spec["steps"]) == ("failed", 0, [30])
    assert "cannot run on run" in surface.error and "9 grid points" in surface.error
    assert surface.finished_at is not None
    assert spectrum.status == "queued"


def test_whatever_breaks_in_creating_them_never_costs_the_run_its_success(env):
    runs = env.experiment(analyses=[SPECTRUM], vary={})
    with transaction(env.factory) as s:  # a row no version of the API would write
        s.get(Run, runs[0]).experiment.analyses = ["not a spec", SPECTRUM]
    assert env.execute(runs[0]) == "succeeded"
    with env.factory() as s:
        assert s.get(Run, runs[0]).status == "succeeded"
    assert env.analyses() == []  # the savepoint took them all back, the success stayed


def test_they_are_sent_after_the_commit_or_by_the_reconciler(env):
    runs = env.experiment(analyses=[SURFACE, SPECTRUM])
    celery = make_celery(env.settings)
    try:
        assert env.execute(runs[0], celery=celery) == "succeeded"
        sent = env.analyses(run_id=runs[0])
        assert all(a.enqueued_at is not None for a in sent)
        assert waiting_tasks(env.settings) == {("prepare", a.id) for a in sent}
        assert env.execute(runs[1]) == "succeeded"  # no broker at hand: left unsent
        unsent = env.analyses(run_id=runs[1])
        assert all(a.enqueued_at is None for a in unsent)
        out = reconcile_analyses(env.factory, celery, env.settings, grace=0.0)
        assert out.sent == [a.id for a in unsent]
        assert waiting_tasks(env.settings) == {("prepare", a.id) for a in sent + unsent}
    finally:
        celery.close()


def test_the_created_analyses_run_to_success(env):
    runs = env.experiment(analyses=[SURFACE, SPECTRUM], vary={})
    env.execute(runs[0])
    chunks: list[tuple] = []
    for a in env.analyses():
        prepare(a.id, settings=env.settings, engine=env.engine, worker="t", device="cpu",
                send_chunk=lambda *x: chunks.append(x[:3]), jobs=JobCache())
    assert {aid for aid, _step, _i in chunks} == {env.analyses()[0].id}  # a spectrum has none
    for task in chunks:
        run_chunk(*task, settings=env.settings, engine=env.engine, device="cpu",
                  jobs=JobCache())
    got = env.analyses()
    assert [(a.kind, a.status, a.done_points) for a in got] == [
        ("surface", "succeeded", 9), ("spectrum", "succeeded", 0)]


# -- a real worker ----------------------------------------------------------------------------


def _backend(request, name):
    if name == "embedded+sqlite":
        return request.getfixturevalue("sqlite_url"), None
    return request.getfixturevalue("pg_url"), request.getfixturevalue("redis_space")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["embedded+sqlite", "redis+postgresql"])
def test_a_worker_takes_a_paired_experiment_to_its_surfaces_and_spectra(
        backend, request, tmp_path, service_env, workers, waiter):
    db_url, redis = _backend(request, backend)
    broker = redis.settings() if redis else {
        "broker_url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"}
    env = Env(tmp_path, db_url)
    env.settings = env.settings.model_copy(update=broker)
    celery = make_celery(env.settings)
    try:
        workers.start(service_env(data_dir=tmp_path, database_url=db_url,
                                  worker_device="cpu", heartbeat_seconds=0.2, **broker), "auto")
        runs = env.experiment(analyses=[SURFACE, SPECTRUM])
        for run_id in runs:
            send_run(celery, run_id, "landscope.cpu")

        def finished() -> bool:
            got = env.analyses()
            return len(got) == 4 and all(a.status not in ("queued", "running") for a in got)

        waiter(finished, 180, interval=0.2, what="both runs' analyses")
        got = env.analyses()
        assert [(a.run_id, a.kind, a.status, a.error) for a in got] == [
            (r, k, "succeeded", None) for r in runs for k in ("surface", "spectrum")]
        assert [a.done_points for a in got] == [9, 0, 9, 0]
        assert got[0].group_id == got[2].group_id and got[1].group_id == got[3].group_id
    finally:
        celery.close()
        env.close()
