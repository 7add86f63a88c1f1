"""Analyses on workers: snapshots indexed as a run trains, prepare and chunk tasks storing
points that equal an in-process AnalysisJob.run_all bit for bit, idempotent redelivery,
cancel, failure; then real `landscope worker` subprocesses on both brokers, and a worker
killed in the middle of a surface that loses no point.

The run is trained by the worker's own runner (execute_run), so its snapshots are the files
and rows a deployment has; analyses are created by the API's service, as a request would.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select, update

from server.analysis_spec import AnalysisSpec, chunks
from server.db.migrate import upgrade
from server.db.models import Analysis, AnalysisPoint, AnalysisValue, Snapshot
from server.db.session import make_engine, make_sessionmaker
from server.queue import make_celery, send_analysis_prepare, send_run
from server.schemas_analyses import AnalysisCreate
from server.services import analyses
from server.services.analysis_reconcile import reconcile_analyses, waiting_tasks
from server.settings import Settings
from server.spec import build_spec
from worker.analysis_runner import REQUEUE, JobCache, prepare, run_chunk
from worker.analysis_sink import AnalysisGone, SqlAnalysisSink, json_safe
from worker.engine.geometry.job import AnalysisJob
from worker.engine.geometry.sink import GridValue, MemoryAnalysisSink
from worker.engine.snapshots import DirectorySnapshotStore
from worker.runner import execute_run
from worker.snapshot_index import IndexedSnapshotStore, snapshot_dir

# A small BN classifier on digits (no download): every BN mode matters, accuracy is measured.
RUN = {"model": "mlp", "depth": 3, "width": 16, "norm": "batch", "dataset": "digits",
       "lr": 0.3, "batch_size": 32, "steps": 30, "eval_every": 0, "device": "cpu",
       "snapshots": {"every": 10}, "probes": {"landscape": {"every": 0}}}
SURFACE = {"kind": "surface", "x": {"points": 5}, "y": {"lo": -0.5, "hi": 0.5, "points": 4},
           "eval_samples": 128, "batch_size": 64, "chunk_points": 8,
           "directions": {"seed": 11}}


class Env:
    """A migrated database, a data directory and the settings a worker would have."""

    def __init__(self, tmp_path: Path, db_url: str, **broker) -> None:
        upgrade(db_url)
        self.url = db_url
        self.engine = make_engine(db_url)
        self.factory = make_sessionmaker(self.engine)
        self.settings = Settings(_env_file=None, data_dir=tmp_path, database_url=db_url,
                                 heartbeat_seconds=0.2, **broker)

    def train(self, make_run, **changes) -> int:
        spec = build_spec({**RUN, **changes})
        run_id = make_run(self.url, spec)
        outcome = execute_run(run_id, settings=self.settings, engine=self.engine,
                              worker="test", device="cpu")
        assert outcome == "succeeded"
        return run_id

    def create(self, run_id: int, **spec) -> Analysis:
        with self.factory() as s:
            rows, _cost, created = analyses.create_analyses(
                s, self.settings, AnalysisCreate(run_id=run_id, spec=AnalysisSpec(**spec)))
            s.commit()
            assert created
            return rows[0]

    def analysis(self, analysis_id: int) -> Analysis:
        with self.factory() as s:
            return s.get(Analysis, analysis_id)

    def points(self, analysis_id: int) -> dict[tuple[int, int], tuple]:
        """(step, index) -> (loss, acc, test_loss, test_acc); no test loss without a test set
        (the column reads NULL back as NaN, as the API knows)."""
        with self.factory() as s:
            test = s.get(Analysis, analysis_id).spec["test_set"]
            rows = s.execute(select(AnalysisPoint).where(
                AnalysisPoint.analysis_id == analysis_id)).scalars().all()
        return {(p.step, p.idx): (p.loss, p.acc, p.test_loss if test else None, p.test_acc)
                for p in rows}

    def values(self, analysis_id: int) -> dict[tuple[int, str], object]:
        with self.factory() as s:
            rows = s.execute(select(AnalysisValue).where(
                AnalysisValue.analysis_id == analysis_id)).scalars().all()
        return {(v.step, v.name): v.value for v in rows}

    def reference(self, run_id: int, spec: dict) -> MemoryAnalysisSink:
        """The same analysis in this process, in one go (the CLI's way)."""
        a = self.analysis_spec(run_id, spec)
        sink = MemoryAnalysisSink()
        job = AnalysisJob(build_spec(RUN), a, self.settings.data_dir,
                          DirectorySnapshotStore(snapshot_dir(self.settings, run_id)), "cpu")
        assert job.run_all(sink)
        return sink

    @staticmethod
    def analysis_spec(run_id: int, spec: dict) -> AnalysisSpec:
        steps = spec.get("steps") or [RUN["steps"]]
        return AnalysisSpec.model_validate({**spec, "steps": steps})

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def env(tmp_path, sqlite_url):
    e = Env(tmp_path, sqlite_url)
    yield e
    e.close()


def as_points(sink: MemoryAnalysisSink) -> dict[tuple[int, int], tuple]:
    return {(step, i): (v.loss, v.acc, v.test_loss, v.test_acc)
            for step, grid in sink.grid.items() for i, v in grid.items()}


def same_points(got: dict, want: dict, rel: float = 0.0) -> None:
    """Equal (bit for bit when rel is 0; NaN equal to NaN), nothing more or less.

    Another process (a worker) may sum in another order: CPU kernels pick their threading by
    the machine's load, so its float32 sums can differ in the last bits, as
    test_celery_worker.py allows for runs (rel=1e-5)."""
    assert got.keys() == want.keys()
    for key, row in want.items():
        for a, b in zip(got[key], row, strict=True):
            same = a == b or (a != a and b != b) or (
                rel and a is not None and b is not None and a == pytest.approx(b, rel=rel))
            assert same, (key, got[key], row)


def drive(env: Env, analysis_id: int, order=lambda sent: sent) -> list[tuple]:
    """prepare, then every chunk it sent (in `order`), as the workers would."""
    jobs = JobCache()
    sent: list[tuple] = []
    out = prepare(analysis_id, settings=env.settings, engine=env.engine, worker="w",
                  device="cpu", send_chunk=lambda *a: sent.append(a[:3]), jobs=jobs)
    assert out in ("prepared", "succeeded", "skipped: succeeded"), out
    for aid, step, i in order(sent):
        run_chunk(aid, step, i, settings=env.settings, engine=env.engine, device="cpu",
                  jobs=JobCache() if i % 2 else jobs)  # fresh jobs: as another worker
    return sent


def test_a_run_s_snapshots_are_files_and_rows(env, make_run):
    run_id = env.train(make_run)
    files = DirectorySnapshotStore(snapshot_dir(env.settings, run_id))
    assert files.steps() == [0, 10, 20, 30]
    with env.factory() as s:
        rows = s.execute(select(Snapshot).where(Snapshot.run_id == run_id)
                         .order_by(Snapshot.step)).scalars().all()
    assert [(r.step, Path(r.path), r.bytes) for r in rows] == [
        (k, files.path(k), files.path(k).stat().st_size) for k in (0, 10, 20, 30)]


def test_a_snapshot_file_without_its_row_is_indexed_by_the_next_store(env, make_run):
    run_id = make_run(env.url, build_spec(RUN))
    directory = snapshot_dir(env.settings, run_id)
    state = {"step": 5, "spec": "{}", "model": {"w": torch.ones(3)}}
    DirectorySnapshotStore(directory).save(5, state)  # the worker died before the row
    store = IndexedSnapshotStore(env.engine, run_id, directory)
    assert store.indexed() == [5]
    store.save(7, {**state, "step": 7})
    store.save(7, {**state, "step": 7})  # a resumed run saving again duplicates nothing
    assert store.indexed() == store.steps() == [5, 7]
    assert torch.equal(store.load(7)["model"]["w"], torch.ones(3))


def test_the_sink_stores_non_finite_values_and_knows_a_deleted_analysis(env, make_run):
    run_id = make_run(env.url, build_spec(RUN))
    with env.factory.begin() as s:
        a = Analysis(run_id=run_id, group_id=1, kind="slice", bn_mode="batch",
                     spec={"kind": "slice", "test_set": False},
                     queue="landscope.cpu", total_points=3, status="running")
        s.add(a)
    sink = SqlAnalysisSink(env.engine, a.id)
    sink.values(0, {"spectrum": {"trace": math.inf, "top": (1.5, math.nan)}})
    sink.points(0, [GridValue(0, math.nan), GridValue(2, -math.inf, 0.5)])
    sink.points(0, [GridValue(2, 1.0, 1.0)])  # stored already: the first value stays
    assert env.values(a.id) == {(0, "spectrum"): {"trace": "Infinity", "top": [1.5, "NaN"]}}
    got = {k: v[:2] for k, v in env.points(a.id).items()}
    assert math.isnan(got.pop((0, 0))[0]) and got == {(0, 2): (-math.inf, 0.5)}
    assert env.analysis(a.id).done_points == 2
    with env.factory.begin() as s:
        analyses.cancel_analysis(s, a.id)
        analyses.delete_analysis(s, env.settings, a.id)
    with pytest.raises(AnalysisGone):
        sink.points(0, [GridValue(1, 0.0)])


def test_a_surface_in_chunks_equals_the_in_process_surface(env, make_run):
    run_id = env.train(make_run)
    spec = {**SURFACE, "steps": [10, 30], "test_set": True}
    a = env.create(run_id, **spec)
    sent = drive(env, a.id, order=lambda sent: list(reversed(sent)) + sent[:3])
    assert sent == [(a.id, step, i) for step in (10, 30) for i in range(len(chunks(20, 8)))]
    done = env.analysis(a.id)
    assert (done.status, done.done_points, done.total_points) == ("succeeded", 40, 40)
    assert done.prepared_steps == [10, 30] and done.finished_at is not None
    ref = env.reference(run_id, spec)
    same_points(env.points(a.id), as_points(ref))
    stored = env.values(a.id)
    assert stored == {(step, k): json_safe(v) for step, vals in ref.named.items()
                      for k, v in vals.items()}
    saved = torch.load(analyses.directions_path(env.settings, a.id, 30), weights_only=True)
    assert saved["step"] == 30 and len(saved["directions"]) == 2
    # Delivered again, every task finds its work done and changes nothing.
    before = env.points(a.id)
    drive(env, a.id)
    run_chunk(a.id, 30, 0, settings=env.settings, engine=env.engine, device="cpu",
              jobs=JobCache())
    assert env.points(a.id) == before and env.analysis(a.id).status == "succeeded"


def test_a_spectrum_and_an_interpolation_barrier(env, make_run):
    run_id = env.train(make_run)
    spectrum = {"kind": "spectrum", "eval_samples": 128, "batch_size": 64,
                "spectrum": {"top_k": 2, "lanczos_steps": 6, "trace_probes": 4,
                             "slq_steps": 6, "slq_vectors": 2, "density_points": 32}}
    a = env.create(run_id, **spectrum)
    drive(env, a.id)
    assert env.analysis(a.id).status == "succeeded"
    ref = env.reference(run_id, spectrum)
    assert env.values(a.id)[(30, "spectrum")] == json_safe(ref.named[30]["spectrum"])

    interp = {"kind": "slice", "directions": {"kind": "interpolation"}, "eval_samples": 128,
              "x": {"lo": -0.5, "hi": 1.5, "points": 9}, "chunk_points": 8}
    b = env.create(run_id, **interp)
    drive(env, b.id)
    ref = env.reference(run_id, interp)
    same_points(env.points(b.id), as_points(ref))
    assert env.values(b.id)[(30, "barrier")] == json_safe(ref.named[30]["barrier"])


def test_a_cancelled_analysis_stops_between_chunks(env, make_run):
    run_id = env.train(make_run)
    a = env.create(run_id, **SURFACE)
    sent = []
    prepare(a.id, settings=env.settings, engine=env.engine, worker="w", device="cpu",
            send_chunk=lambda *x: sent.append(x[:3]), jobs=JobCache())
    run_chunk(*sent[0], settings=env.settings, engine=env.engine, device="cpu",
              jobs=JobCache())
    with env.factory() as s:
        analyses.cancel_analysis(s, a.id)
        s.commit()
    for task in sent[1:]:
        out = run_chunk(*task, settings=env.settings, engine=env.engine, device="cpu",
                        jobs=JobCache())
        assert out == "skipped: cancelled"
    got = env.analysis(a.id)
    assert got.status == "cancelled" and got.done_points == 8 and len(env.points(a.id)) == 8


def test_a_worker_shutting_down_hands_its_tasks_back(env, make_run):
    run_id = env.train(make_run)
    a = env.create(run_id, **SURFACE)
    stop, sent = threading.Event(), []
    kw = {"settings": env.settings, "engine": env.engine, "device": "cpu", "jobs": JobCache()}
    stop.set()
    assert prepare(a.id, worker="w", send_chunk=lambda *x: sent.append(x[:3]), shutdown=stop,
                   **kw) == REQUEUE
    assert env.analysis(a.id).status == "queued" and sent == []
    stop.clear()
    prepare(a.id, worker="w", send_chunk=lambda *x: sent.append(x[:3]), shutdown=stop, **kw)
    stop.set()
    assert run_chunk(*sent[0], shutdown=stop, **kw) == REQUEUE
    assert env.analysis(a.id).done_points == 0


def test_a_broken_directions_file_fails_the_analysis_with_its_error(env, make_run):
    run_id = env.train(make_run)
    a = env.create(run_id, **SURFACE)
    sent = []
    prepare(a.id, settings=env.settings, engine=env.engine, worker="w", device="cpu",
            send_chunk=lambda *x: sent.append(x[:3]), jobs=JobCache())
    analyses.directions_path(env.settings, a.id, 30).write_bytes(b"not a tensor file")
    out = run_chunk(*sent[0], settings=env.settings, engine=env.engine, device="cpu",
                    jobs=JobCache())
    got = env.analysis(a.id)
    assert out == "failed" and got.status == "failed" and "Traceback" in got.error


def test_the_reconciler_resends_what_a_silent_analysis_misses(env, make_run, tmp_path):
    run_id = env.train(make_run)
    a = env.create(run_id, **SURFACE)
    sent = []
    prepare(a.id, settings=env.settings, engine=env.engine, worker="w", device="cpu",
            send_chunk=lambda *x: sent.append(x[:3]), jobs=JobCache())
    for task in sent[:2]:
        run_chunk(*task, settings=env.settings, engine=env.engine, device="cpu",
                  jobs=JobCache())
    never = env.create(run_id, **SURFACE)  # saved, never sent
    settings = env.settings.model_copy(update={
        "stale_seconds": 60.0, "broker_url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"})
    celery = make_celery(settings)
    try:
        first = reconcile_analyses(env.factory, celery, settings, grace=0.0)
        assert first.sent == [never.id] and first.resent == {}  # a fresh heartbeat
        with env.engine.begin() as c:
            c.execute(update(Analysis).where(Analysis.id == a.id).values(heartbeat_at=None))
        second = reconcile_analyses(env.factory, celery, settings, grace=0.0)
        assert second.sent == []
        assert second.resent == {a.id: [("chunk", 30, i) for i in range(2, len(sent))]}
        assert reconcile_analyses(env.factory, celery, settings, grace=0.0).resent == {}
        # Silent again, but what it misses now waits in the queue: nothing is sent twice.
        with env.engine.begin() as c:
            c.execute(update(Analysis).where(Analysis.id == a.id).values(heartbeat_at=None))
        assert len(waiting_tasks(settings)) == 1 + len(sent) - 2
        assert reconcile_analyses(env.factory, celery, settings, grace=0.0).resent == {}
    finally:
        celery.close()


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_the_reconciler_resends_a_queued_analysis_whose_message_was_lost(
        env, make_run, tmp_path, request, broker):
    """A broker flush between the send and a worker's take leaves the analysis queued with no
    message anywhere: the reconciler sends its prepare task again, once; a message waiting, or
    delivered and not yet acknowledged, is left alone."""
    import redis

    if broker == "redis":
        space = request.getfixturevalue("redis_space")
        settings = env.settings.model_copy(update=space.settings())
    else:
        settings = env.settings.model_copy(update={
            "broker_url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"})
    run_id = env.train(make_run)
    a = env.create(run_id, **SURFACE)
    celery = make_celery(settings)
    try:
        send_analysis_prepare(celery, a.id, a.queue)
        with env.engine.begin() as c:
            c.execute(update(Analysis).where(Analysis.id == a.id).values(enqueued_at=func.now()))
        assert reconcile_analyses(env.factory, celery, settings, grace=0.0).lost == []
        if broker == "redis":
            # Delivered to a worker, not acknowledged: kombu moves it to the unacked hash.
            r = redis.Redis.from_url(space.url)
            key = space.prefix + a.queue
            raw = r.lpop(key)
            r.hset(space.prefix + "unacked", "tag-1", f'[{raw.decode()}, "", "{a.queue}"]')
            assert reconcile_analyses(env.factory, celery, settings, grace=0.0).lost == []
            space.clear()  # the flush
        else:
            from sqlalchemy import create_engine, text

            broker_db = create_engine(settings.broker_url.removeprefix("sqla+"))
            with broker_db.begin() as c:
                c.execute(text("DELETE FROM kombu_message"))
            broker_db.dispose()
        assert waiting_tasks(settings, unacked=True) == set()
        assert reconcile_analyses(env.factory, celery, settings, grace=0.0).lost == [a.id]
        assert waiting_tasks(settings) == {("prepare", a.id)}
        assert reconcile_analyses(env.factory, celery, settings, grace=0.0).lost == []
    finally:
        celery.close()


# -- real workers -----------------------------------------------------------------------------

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
