"""Celery tasks: thin adapters from a message to worker.runner (where the logic and its rules
are). A task takes only a run id; everything else is read from the run's row."""

from __future__ import annotations

from celery.exceptions import Reject
from sqlalchemy.exc import OperationalError

from server.queue import RUN_TASK
from server.settings import get_settings
from worker.celery_app import STATE, app
from worker.runner import REQUEUE, execute_run, stale_after

DB_RETRIES = 20


@app.task(name=RUN_TASK, bind=True, max_retries=DB_RETRIES)
def run_task(self, run_id: int) -> str:
    settings = get_settings()
    hb = STATE.heartbeat
    if hb is not None:
        hb.current_run_id = run_id
    try:
        outcome = execute_run(
            int(run_id), settings=settings, engine=STATE.engine(),
            worker=self.request.hostname or "unknown", device=STATE.device,
            shutdown=STATE.shutdown, celery=app,
        )
    except OperationalError as exc:
        # The database is unreachable, so the run's state could not be read or written.
        # Try again once its heartbeat is stale: the retry can then claim (or take over and
        # resume) it, where a message dropped now would leave the run waiting forever.
        raise self.retry(exc=exc, countdown=stale_after(settings) + 1) from exc
    finally:
        if hb is not None:
            hb.current_run_id = None
    if outcome == REQUEUE:
        # The worker is shutting down mid-run: put the message back for the next worker.
        raise Reject(f"run {run_id}: worker shutting down; requeued", requeue=True)
    return outcome
