"""Executing an analysis by id: prepare its steps, then evaluate its grid chunk by chunk.

Plain functions over a database engine and Settings (worker/analysis_tasks.py is the thin
Celery adapter). The rules, since any message may be delivered twice and any worker may die:

- prepare(analysis): claims it (queued -> running; a running one is taken as is: a
  redelivery, or the reconciler's resend after a worker died). For each step not yet in
  `prepared_steps` (or whose directions file is gone): AnalysisJob.prepare writes the
  step's values, the directions are saved atomically, the step is marked prepared; then the
  step's chunks that still miss points are sent, after that commit.
- chunk(analysis, step, i): skipped unless the analysis is running and the step prepared;
  evaluates only the chunk's indices not stored yet; points are insert-ignore. Cancel is
  read between groups of points (AnalysisLease), so a cancelled analysis stops within one.
- The analysis succeeds when every step is prepared and every grid point is stored,
  whichever task stores the last one (an interpolation slice's barrier is computed then,
  from the stored losses). An exception fails it, with the error kept.
- While a task works, a lease touches heartbeat_at; an analysis silent for stale_after
  seconds is resent by the reconciler (server/services/analysis_reconcile.py).
- A worker shutting down stops between steps (prepare) or groups of points (chunk) and
  answers REQUEUE: the task puts its message back, and the next worker goes on from what is
  stored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from server.analysis_spec import AnalysisSpec, chunks
from server.db.models import Analysis, AnalysisPoint, AnalysisValue, Run, utcnow
from server.db.session import make_sessionmaker, transaction
from server.services.analyses import directions_path
from server.settings import Settings
from server.spec import RunSpec
from worker.analysis_sink import AnalysisGone, SqlAnalysisSink, count_points
from worker.runner import error_summary
from worker.snapshot_index import snapshot_dir

log = logging.getLogger(__name__)

REQUEUE = "requeue"  # the worker is shutting down: the task puts its message back
SendChunk = Callable[[int, int, int, str], None]  # (analysis_id, step, chunk index, queue)
SendPrepare = Callable[[int, str], None]


@dataclass(frozen=True)
class Claimed:
    """What a task reads of its analysis."""

    id: int
    run_id: int
    queue: str
    spec: AnalysisSpec
    run_spec: RunSpec
    total_points: int
    prepared: frozenset[int]


def read_analysis(factory: sessionmaker[Session], analysis_id: int, *,
                  claim_worker: str | None = None) -> Claimed | str:
    """The analysis if it is running (claimed from queued when `claim_worker` is given);
    otherwise a string saying why it is left alone."""
    with transaction(factory) as s:
        a = s.get(Analysis, analysis_id)
        if a is None:
            return "deleted"
        if a.status == "queued" and claim_worker is not None:
            now = utcnow()
            hit = s.execute(update(Analysis).where(Analysis.id == a.id,
                                                   Analysis.status == "queued")
                            .values(status="running", worker=claim_worker, started_at=now,
                                    heartbeat_at=now)).rowcount
            if not hit:
                return "claimed concurrently"
            s.refresh(a)
        if a.status != "running":
            return f"{a.status}"
        run = s.get(Run, a.run_id)
        return Claimed(a.id, a.run_id, a.queue, AnalysisSpec.model_validate(a.spec),
                       RunSpec.model_validate(run.spec), a.total_points,
                       frozenset(int(x) for x in a.prepared_steps))


class AnalysisLease:
    """A daemon thread that touches the analysis's heartbeat and reads its status, so a long
    prepare (a spectrum) never looks dead and a cancel is seen between groups of points."""

    def __init__(self, factory: sessionmaker[Session], analysis_id: int, interval: float,
                 shutdown: threading.Event | None = None):
        self.factory, self.analysis_id, self.interval = factory, analysis_id, interval
        self.shutdown = shutdown or threading.Event()  # the worker's: stop, to be requeued
        self.stopped = threading.Event()  # cancelled, failed elsewhere, or deleted
        self._end = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"analysis-lease-{analysis_id}")

    def __enter__(self) -> AnalysisLease:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._end.set()
        self._thread.join(timeout=5)

    def should_stop(self) -> bool:
        return self.stopped.is_set() or self.shutdown.is_set()

    def shutting_down(self) -> bool:
        return self.shutdown.is_set() and not self.stopped.is_set()

    def _beat(self) -> None:
        with transaction(self.factory) as s:
            hit = s.execute(update(Analysis).where(Analysis.id == self.analysis_id,
                                                   Analysis.status == "running")
                            .values(heartbeat_at=utcnow())).rowcount
        if not hit:
            self.stopped.set()

    def _loop(self) -> None:
        while not self._end.wait(self.interval):
            try:
                self._beat()
            except Exception as exc:  # noqa: BLE001 - a blip: the next beat may work
                log.warning("analysis %s: heartbeat failed: %s", self.analysis_id, exc)


@dataclass
class JobCache:
    """The last analysis's AnalysisJob and the steps whose directions it holds: the chunks
    of one analysis mostly follow each other on a worker, and building a job loads the data."""

    key: tuple | None = None
    job: Any = None
    loaded: set[int] = field(default_factory=set)

    def get(self, a: Claimed, settings: Settings, device: str):
        from worker.engine.geometry.job import AnalysisJob
        from worker.engine.snapshots import DirectorySnapshotStore

        key = (a.id, a.spec.model_dump_json(), device)
        if self.key != key:
            d = a.spec.directions
            other = (DirectorySnapshotStore(snapshot_dir(settings, d.other_run))
                     if d.kind == "interpolation" and d.source == "run" else None)
            self.key, self.loaded = None, set()
            self.job = AnalysisJob(a.run_spec, a.spec, settings.data_dir,
                                   DirectorySnapshotStore(snapshot_dir(settings, a.run_id)),
                                   device, other_snapshots=other,
                                   threads=settings.torch_threads)
            self.key = key
        return self.job

    def directions(self, a: Claimed, step: int, settings: Settings, device: str):
        import torch

        job = self.get(a, settings, device)
        if step not in self.loaded:
            path = directions_path(settings, a.id, step)
            job.load_directions(torch.load(path, map_location="cpu", weights_only=True))
            self.loaded.add(step)
        return job


def missing_chunks(factory: sessionmaker[Session], a: Claimed, step: int) -> list[int]:
    """Indices (into chunks()) of the step's chunks with a point not stored yet."""
    with factory() as s:
        stored = set(s.scalars(select(AnalysisPoint.idx).where(
            AnalysisPoint.analysis_id == a.id, AnalysisPoint.step == step)))
    return [i for i, rng in enumerate(chunks(a.spec.grid_points(), a.spec.chunk_points))
            if any(k not in stored for k in rng)]


def _mark_prepared(factory: sessionmaker[Session], analysis_id: int, step: int) -> None:
    with transaction(factory) as s:
        a = s.get(Analysis, analysis_id, with_for_update=True)
        if a is not None and step not in a.prepared_steps:
            a.prepared_steps = sorted({*a.prepared_steps, step})


def prepare(analysis_id: int, *, settings: Settings, engine: Engine, worker: str,
            device: str, send_chunk: SendChunk, jobs: JobCache,
            shutdown: threading.Event | None = None) -> str:
    """Prepare every step not prepared yet, sending each step's missing chunks after it.
    REQUEUE when the worker is shutting down (between steps): the next worker goes on."""
    if shutdown is not None and shutdown.is_set():
        return REQUEUE
    factory = make_sessionmaker(engine)
    a = read_analysis(factory, analysis_id, claim_worker=worker)
    if isinstance(a, str):
        return f"skipped: {a}"
    return _guarded(factory, a, settings, shutdown, lambda lease: _prepare(
        factory, a, settings, device, send_chunk, jobs, engine, lease))


def _prepare(factory, a: Claimed, settings: Settings, device: str, send_chunk: SendChunk,
             jobs: JobCache, engine: Engine, lease: AnalysisLease) -> str:
    sink = SqlAnalysisSink(engine, a.id, outage_seconds=settings.db_outage_seconds)
    for step in a.spec.steps or []:
        if lease.should_stop():
            return "stopped"
        path = directions_path(settings, a.id, step)
        if step not in a.prepared or not path.exists():
            job = jobs.get(a, settings, device)
            job.prepare(step, sink)
            job.save_directions(step, path)
            jobs.loaded.add(step)
            _mark_prepared(factory, a.id, step)
        for i in missing_chunks(factory, a, step):
            send_chunk(a.id, step, i, a.queue)
    return finish_if_done(factory, a, settings) or "prepared"


def run_chunk(analysis_id: int, step: int, chunk: int, *, settings: Settings, engine: Engine,
              device: str, jobs: JobCache, shutdown: threading.Event | None = None) -> str:
    """Evaluate the chunk's points not stored yet; finish the analysis if they were the last.
    REQUEUE when the worker is shutting down (between groups of points)."""
    if shutdown is not None and shutdown.is_set():
        return REQUEUE
    factory = make_sessionmaker(engine)
    a = read_analysis(factory, analysis_id)
    if isinstance(a, str):
        return f"skipped: {a}"
    if step not in a.prepared:
        return f"skipped: step {step} not prepared"
    cut = chunks(a.spec.grid_points(), a.spec.chunk_points)
    if not 0 <= chunk < len(cut):
        raise ValueError(f"analysis {a.id}: no chunk {chunk} (it has {len(cut)})")
    return _guarded(factory, a, settings, shutdown, lambda lease: _chunk(
        factory, a, step, cut[chunk], settings, device, jobs, engine, lease))


def _chunk(factory, a: Claimed, step: int, rng: range, settings: Settings, device: str,
           jobs: JobCache, engine: Engine, lease: AnalysisLease) -> str:
    with factory() as s:
        stored = set(s.scalars(select(AnalysisPoint.idx).where(
            AnalysisPoint.analysis_id == a.id, AnalysisPoint.step == step,
            AnalysisPoint.idx >= rng.start, AnalysisPoint.idx < rng.stop)))
    todo = [i for i in rng if i not in stored]
    if todo:
        job = jobs.directions(a, step, settings, device)
        sink = SqlAnalysisSink(engine, a.id, outage_seconds=settings.db_outage_seconds)
        done = job.run_chunk(step, todo, sink, should_stop=lease.should_stop)
        if done < len(todo):
            return "stopped"
    return finish_if_done(factory, a, settings) or f"stored {len(todo)} point(s)"


def _guarded(factory, a: Claimed, settings: Settings, shutdown: threading.Event | None,
             work: Callable[[AnalysisLease], str]) -> str:
    """`work` under a lease; an exception fails the analysis (a deleted one is left alone)."""
    try:
        with AnalysisLease(factory, a.id, min(0.5, settings.heartbeat_seconds),
                           shutdown) as lease:
            out = work(lease)
            return REQUEUE if out == "stopped" and lease.shutting_down() else out
    except AnalysisGone:
        return "skipped: deleted"
    except Exception as exc:
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError):
            raise  # the database is away: the task retries later
        log.exception("analysis %s failed", a.id)
        with transaction(factory) as s:
            s.execute(update(Analysis).where(Analysis.id == a.id, Analysis.status == "running")
                      .values(status="failed", error=error_summary(exc),
                              finished_at=utcnow()))
        return "failed"


def finish_if_done(factory: sessionmaker[Session], a: Claimed, settings: Settings) -> str | None:
    """'succeeded' once every step is prepared and every point stored; None otherwise."""
    with transaction(factory) as s:
        row = s.get(Analysis, a.id)
        if row is None or row.status != "running":
            return None
        steps = set(a.spec.steps or [])
        if not steps <= {int(x) for x in row.prepared_steps}:
            return None
        if count_points(s.connection(), a.id) < a.total_points:
            return None
    if a.spec.kind == "slice" and a.spec.directions.kind == "interpolation":
        _store_barriers(factory, a)
    with transaction(factory) as s:
        hit = s.execute(update(Analysis).where(Analysis.id == a.id, Analysis.status == "running")
                        .values(status="succeeded", finished_at=utcnow(),
                                done_points=a.total_points, heartbeat_at=utcnow())).rowcount
    return "succeeded" if hit else None


def _store_barriers(factory: sessionmaker[Session], a: Claimed) -> None:
    """An interpolation slice's barrier per step, from every stored loss (job.py's rule)."""
    import math

    from worker.analysis_sink import json_safe
    from worker.engine.geometry.job_prepare import interpolation_barrier

    with transaction(factory) as s:
        for step in a.spec.steps or []:
            losses = {i: (math.nan if v is None else v) for i, v in s.execute(
                select(AnalysisPoint.idx, AnalysisPoint.loss).where(
                    AnalysisPoint.analysis_id == a.id, AnalysisPoint.step == step))}
            ends = s.scalar(select(AnalysisValue.value).where(
                AnalysisValue.analysis_id == a.id, AnalysisValue.step == step,
                AnalysisValue.name == "endpoints"))
            if ends is None:
                continue
            ends = {k: {**v, "loss": float(v["loss"])} for k, v in ends.items()}
            value = json_safe(interpolation_barrier(a.spec, losses, ends))
            s.merge(AnalysisValue(analysis_id=a.id, step=step, name="barrier", value=value))
