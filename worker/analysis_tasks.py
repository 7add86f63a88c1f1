"""Celery tasks of analyses: thin adapters from a message to worker/analysis_runner.py.

A task takes only ids; everything else is read from the analysis's row. Chunks are sent from
the prepare task once the step's directions are committed, to the analysis's queue (its
run's), so that any worker consuming it may take them.
"""

from __future__ import annotations

from celery.exceptions import Reject
from sqlalchemy.exc import OperationalError

from server.queue import ANALYSIS_CHUNK_TASK, ANALYSIS_PREPARE_TASK, send_analysis_chunk
from server.settings import get_settings
from worker.analysis_runner import REQUEUE, JobCache, prepare, run_chunk
from worker.celery_app import STATE, app
from worker.runner import stale_after

DB_RETRIES = 20
JOBS = JobCache()  # one worker process runs one task at a time (solo pool)


def _send_chunk(analysis_id: int, step: int, chunk: int, queue: str) -> None:
    send_analysis_chunk(app, analysis_id, step, chunk, queue)


@app.task(name=ANALYSIS_PREPARE_TASK, bind=True, max_retries=DB_RETRIES)
def prepare_task(self, analysis_id: int) -> str:
    settings = get_settings()
    try:
        out = prepare(int(analysis_id), settings=settings, engine=STATE.engine(),
                      worker=self.request.hostname or "unknown", device=STATE.device,
                      send_chunk=_send_chunk, jobs=JOBS, shutdown=STATE.shutdown)
    except OperationalError as exc:  # the database is away: try again once it may be back
        raise self.retry(exc=exc, countdown=stale_after(settings) + 1) from exc
    return _requeued(out, f"analysis {analysis_id}: prepare")


@app.task(name=ANALYSIS_CHUNK_TASK, bind=True, max_retries=DB_RETRIES)
def chunk_task(self, analysis_id: int, step: int, chunk: int) -> str:
    settings = get_settings()
    try:
        out = run_chunk(int(analysis_id), int(step), int(chunk), settings=settings,
                        engine=STATE.engine(), device=STATE.device, jobs=JOBS,
                        shutdown=STATE.shutdown)
    except OperationalError as exc:
        raise self.retry(exc=exc, countdown=stale_after(settings) + 1) from exc
    return _requeued(out, f"analysis {analysis_id}: chunk {step}/{chunk}")


def _requeued(outcome: str, what: str) -> str:
    if outcome == REQUEUE:  # the worker stops: the message goes back for the next worker
        raise Reject(f"{what}: worker shutting down; requeued", requeue=True)
    return outcome
