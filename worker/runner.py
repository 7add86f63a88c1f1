"""Executing one run by id: claim the row, train with an SQL sink, record how it ended.

Plain functions over a database engine and Settings, so tests drive them without Celery
(worker/tasks.py is the thin adapter). The rules, since a message may be delivered twice
(acks_late; Redis redelivers what was not acked within its visibility timeout):

- A run is claimed in one short transaction, and only if it is `queued`, or `running` with a
  heartbeat older than stale_after(settings) (its worker died: take it over and resume from
  its checkpoint). The claim bumps `attempts`, which then fences every later write of this
  worker (heartbeat/RunLease, the final status): a worker whose run was taken over can no
  longer write to it.
- Anything else is left alone: finished, deleted, cancelled runs, and a run `running` with a
  fresh heartbeat: that is a duplicate delivery of a run another worker is training.
- A queued run with cancel_requested set (the API may not have finished it) ends `cancelled`.
- Metrics are idempotent (insert-ignore), so a resumed run re-measures the steps after its
  last checkpoint and duplicates nothing.
- When the worker is shutting down mid-run, the engine pauses the run with a checkpoint at
  the step where it stopped, the run goes back to `queued` and the task requeues its
  message: the next worker resumes at exactly that step, training no step twice.
- A run that succeeds gets its experiment's analyses in the transaction that records the
  success (at most once per run and entry: a unique key), sent after the commit; a failed,
  diverged or cancelled run gets none.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from server.db.models import FINISHED_STATUSES, Analysis, Run, utcnow
from server.db.session import make_sessionmaker, transaction, with_retries
from server.settings import Settings
from server.spec import RunSpec
from worker.heartbeat import RunLease

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT_EVERY = 500  # when the spec says 0: resuming beats retraining from step 0
ERROR_CHARS = 4000
REQUEUE = "requeue"  # outcome: the worker is shutting down; the task requeues the message


def stale_after(settings: Settings) -> float:
    """Seconds without a heartbeat after which a running run's worker counts as dead."""
    return settings.stale_after_seconds


def checkpoint_dir(settings: Settings, run_id: int) -> Path:
    return settings.checkpoint_dir / f"run-{run_id}"


def effective_spec(spec: RunSpec) -> RunSpec:
    """The spec the worker trains: the run's own, with a checkpoint period if it had none.

    Checkpointing changes no measurement, and the engine stores this same spec in each
    checkpoint, so a resumed run compares equal to it.
    """
    if spec.checkpoint_every:
        return spec
    return spec.model_copy(update={"checkpoint_every": DEFAULT_CHECKPOINT_EVERY})


@dataclass(frozen=True)
class Claim:
    run_id: int
    attempt: int  # the run's attempts after this claim: the fencing token
    spec: dict[str, Any]
    took_over: bool  # the run was 'running' under a worker whose heartbeat went stale


def claim_run(
    factory: sessionmaker[Session], run_id: int, *, worker: str, device: str, stale_seconds: float
) -> Claim | str:
    """Mark the run running for this worker; a string says why it was left alone."""
    now = utcnow()
    with transaction(factory) as s:
        run = s.get(Run, run_id, with_for_update=True)  # a row lock on PostgreSQL
        if run is None:
            return "deleted"
        if run.status in FINISHED_STATUSES:
            return f"already {run.status}"
        stale = run.heartbeat_at is None or run.heartbeat_at < now - timedelta(
            seconds=stale_seconds
        )
        if run.status == "running" and not stale:
            age = (now - run.heartbeat_at).total_seconds()
            return f"duplicate delivery: running on {run.worker} (heartbeat {age:.1f}s ago)"
        # Compare-and-set on what we read: on SQLite (no row locks) a concurrent claim
        # that got there first bumped attempts, so this update then matches nothing.
        # (Read everything first: the ORM update below refreshes `run` in the session.)
        attempt, status, spec = run.attempts + 1, run.status, dict(run.spec)
        guard = (Run.id == run_id, Run.status == status, Run.attempts == run.attempts)
        if run.cancel_requested:
            s.execute(update(Run).where(*guard).values(status="cancelled", finished_at=now))
            return "cancelled before it started"
        hit = s.execute(
            update(Run)
            .where(*guard)
            .values(
                status="running", worker=worker, device=device, attempts=attempt,
                heartbeat_at=now, started_at=run.started_at or now, error=None,
            )
        ).rowcount
        if not hit:
            return "claimed concurrently by another worker"
        return Claim(run_id, attempt, spec, took_over=status == "running")


def finish_run(factory: sessionmaker[Session], claim: Claim, outage_seconds: float = 0.0,
               then: Callable[[Session], None] | None = None, **values: Any) -> bool:
    """Write the final (or requeued) state, fenced by the claim; False if it was lost.
    `then(session)` runs in the same transaction once the write hit. Transient database
    errors are retried for `outage_seconds` (a blip must not lose it)."""

    def write() -> bool:
        with transaction(factory) as s:
            fence = (Run.id == claim.run_id, Run.attempts == claim.attempt,
                     Run.status == "running")
            hit = bool(s.execute(update(Run).where(*fence).values(**values)).rowcount)
            if hit and then is not None:
                then(s)
            return hit

    return with_retries(write, deadline_s=outage_seconds, what=f"run {claim.run_id}: state")


def error_summary(exc: BaseException, frames: int = 6) -> str:
    """'Type: message', then the innermost traceback frames, within ERROR_CHARS."""
    head = f"{type(exc).__name__}: {exc}"
    tail = "".join(traceback.format_tb(exc.__traceback__)[-frames:]).rstrip()
    text = f"{head}\n\nTraceback (innermost {frames} frames):\n{tail}"
    if len(text) <= ERROR_CHARS:
        return text
    if len(head) >= ERROR_CHARS // 2:  # a huge message: keep its start, and the frames
        head = head[: ERROR_CHARS // 2] + "…"
    room = ERROR_CHARS - len(head) - 40
    return f"{head}\n\nTraceback (innermost frames):\n…{tail[-room:]}"


def execute_run(
    run_id: int,
    *,
    settings: Settings,
    engine: Engine,
    worker: str,
    device: str,
    shutdown: threading.Event | None = None,
    celery: Celery | None = None,
) -> str:
    """Run `run_id` to an end on `device`; returns the outcome (a status, REQUEUE, or why not).
    On success its experiment's analyses are created with the success and sent through
    `celery` after the commit (None: left to the reconciler)."""
    if shutdown is not None and shutdown.is_set():
        return REQUEUE  # delivered while this worker stops: not ours to start
    factory = make_sessionmaker(engine)
    claim = claim_run(
        factory, run_id, worker=worker, device=device, stale_seconds=stale_after(settings)
    )
    if isinstance(claim, str):
        log.info("run %s: left alone: %s", run_id, claim)
        return f"skipped: {claim}"
    if claim.took_over:
        log.warning("run %s: taking over from a worker whose heartbeat went stale", run_id)
    lease = RunLease(factory, run_id, claim.attempt, interval=min(0.5, settings.heartbeat_seconds))
    lease.start()
    try:
        result = _train(claim, settings, engine, device, lease, shutdown or threading.Event())
    except Exception as exc:
        log.exception("run %s failed", run_id)
        if lease.lost.is_set():
            return "lost"
        finish_run(factory, claim, settings.db_outage_seconds,
                   status="failed", error=error_summary(exc),
                   finished_at=utcnow(), heartbeat_at=utcnow(), **_progress(lease))
        return "failed"
    finally:
        lease.stop()  # before the final write, which ends the lease's fence
    if lease.lost.is_set():
        return "lost"  # another worker owns the run now; it measures the same steps
    log.info("run %s: trained from step %d to step %d (%s)", run_id, result.first_step,
             result.next_step, result.status)
    status = result.status
    if status == "paused" and lease.cancel_requested.is_set():
        status = "cancelled"  # cancelled while it stopped: the user's word wins
    if status == "paused":
        # Stopped by the worker's shutdown, checkpointed at next_step: hand the run back.
        finish_run(factory, claim, settings.db_outage_seconds,
                   status="queued", worker=None, heartbeat_at=None,
                   step=result.next_step, last_loss=result.last_loss)
        return REQUEUE
    created: list[int] = []

    def analyses(session: Session) -> None:  # with the success, in its transaction
        created[:] = auto_analyses(session, settings, run_id)

    finish_run(
        factory, claim, settings.db_outage_seconds,
        then=analyses if status == "succeeded" else None, status=status,
        step=result.next_step, last_loss=result.last_loss, diverged_at=result.diverged_at,
        info=result.info, finished_at=utcnow(), heartbeat_at=utcnow(),
    )
    _drop_checkpoints(checkpoint_dir(settings, run_id))  # nothing will resume a finished run
    if created and celery is not None:
        send_auto_analyses(factory, celery, created)
    return status


def auto_analyses(session: Session, settings: Settings, run_id: int) -> list[int]:
    """Create the experiment's analyses of a run that has just succeeded, in the success's
    transaction (server/services/auto_analyses.py); their ids, to send after the commit.
    Under a savepoint: whatever goes wrong here costs the analyses, never the run's success
    (a lost database is the exception: the whole write is retried)."""
    from server.services.auto_analyses import create_for_run

    try:
        with session.begin_nested():
            return [a.id for a in create_for_run(session, settings, run_id)]
    except OperationalError:
        raise
    except Exception:
        log.exception("run %s: could not create its experiment's analyses", run_id)
        return []


def send_auto_analyses(factory: sessionmaker[Session], celery: Celery, ids: list[int]) -> None:
    """Send committed analyses' prepare tasks; any left unsent (the broker away, this worker
    gone) are sent by the reconciler (saved, queued, enqueued_at NULL)."""
    from server.services.analyses import send_analyses

    try:
        with transaction(factory) as s:
            rows = list(s.scalars(select(Analysis).where(Analysis.id.in_(ids))
                                  .order_by(Analysis.id)))
            unsent = send_analyses(s, celery, rows)
        if unsent:
            log.warning("analyses %s: broker unreachable; the reconciler will send them", unsent)
    except Exception:
        log.exception("analyses %s: not sent; the reconciler will send them", ids)


def _train(claim: Claim, settings: Settings, engine: Engine, device: str, lease: RunLease,
           shutdown: threading.Event):
    """Build the trainer and train to the end (or a stop); the engine's RunResult."""
    from worker.engine.checkpoint import DirectoryCheckpointStore
    from worker.engine.trainer import Trainer
    from worker.snapshot_index import IndexedSnapshotStore, snapshot_dir
    from worker.sql_sink import SqlSink

    spec = effective_spec(RunSpec.model_validate(claim.spec))
    trainer = Trainer(spec, settings.data_dir, device, settings.torch_threads)
    # What the server shows and bounds while the run trains: the network's size (analyses of
    # a plug-in), the environment (threads, precision, machine, versions) and the x-axis
    # (epochs and samples seen on the dashboard while it trains).
    record_info(make_sessionmaker(engine), claim,
                {k: trainer.info[k] for k in ("size", "environment", "x_axis")},
                settings.db_outage_seconds)
    # Snapshots for analyses: files under the data directory, indexed in the database.
    snapshots = IndexedSnapshotStore(engine, claim.run_id,
                                     snapshot_dir(settings, claim.run_id),
                                     outage_seconds=settings.db_outage_seconds)
    sink = SqlSink(engine, claim.run_id, flush_seconds=settings.sink_flush_seconds,
                   flush_points=settings.sink_flush_points,
                   outage_seconds=settings.db_outage_seconds)
    def stop_request() -> str | None:
        if lease.should_stop():  # cancelled, or the run is another worker's now
            return "cancel"
        return "pause" if shutdown.is_set() else None  # to be resumed by the next worker

    try:
        result = trainer.run(
            sink,
            should_stop=stop_request,
            checkpoints=DirectoryCheckpointStore(checkpoint_dir(settings, claim.run_id)),
            progress=lease.progress,
            snapshots=snapshots,
            wall_after=stored_wall(engine, claim.run_id),  # None unless resuming
        )
    except BaseException:
        _close_quietly(sink)
        raise
    sink.close()
    return result


def record_info(factory: sessionmaker[Session], claim: Claim, entries: dict[str, Any],
                outage_seconds: float = 0.0) -> bool:
    """Keys of run.info as training starts, so a running run shows them: "size"
    (worker/engine/model_size.py: what the server needs to bound an analysis of a plug-in
    run), "environment" (worker/engine/environment.py: threads, precision, machine,
    versions) and "x_axis" (RunOut.x_axis: batch and training-set size as drawn). The
    other keys are kept (the finish writes them all). Fenced by the claim
    like every write of this worker; False if the run is not ours any more."""

    def write() -> bool:
        with transaction(factory) as s:
            run = s.get(Run, claim.run_id, with_for_update=True)
            if run is None or run.attempts != claim.attempt or run.status != "running":
                return False
            run.info = {**(run.info or {}), **entries}  # a new dict: a JSON change
            return True

    return with_retries(write, deadline_s=outage_seconds,
                        what=f"run {claim.run_id}: {', '.join(entries)}")


def stored_wall(engine: Engine, run_id: int) -> tuple[int, float] | None:
    """(newest step, largest seconds) of the run's stored time/wall_s points, or None if it
    has none: where a run resumed after a worker died counts on from (Trainer.run's
    wall_after), whoever requeued it."""
    from server.db.models import Point, Series
    from worker.engine.wallclock import WALL_KEY

    with engine.connect() as c:
        step, seconds = c.execute(
            select(func.max(Point.step), func.max(Point.value))
            .join(Series, Series.id == Point.series_id)
            .where(Series.run_id == run_id, Series.key == WALL_KEY)).one()
    return None if step is None else (int(step), float(seconds or 0.0))


def _progress(lease: RunLease) -> dict[str, Any]:
    if lease.step is None:
        return {}
    return {"step": lease.step, "last_loss": lease.last_loss}


def _close_quietly(sink) -> None:
    try:
        sink.close()
    except Exception as exc:  # the run's own error is the one worth reporting
        log.warning("could not write the last metrics: %s", exc)


def _drop_checkpoints(directory: Path) -> None:
    for path in directory.glob("ckpt-*"):
        path.unlink(missing_ok=True)
    if directory.exists() and not any(directory.iterdir()):
        directory.rmdir()
