"""The request edge's commit-then-enqueue: a task can never name a run that is not committed,
and a broker failure loses nothing (the runs stay queued with enqueued_at NULL)."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from sqlalchemy.orm import Session

from server.db.models import Run
from server.deadline import note_saved, waiting_on
from server.services.runs import send_runs


def commit_then_enqueue(session: Session, celery: Celery, runs: Sequence[Run]) -> None:
    """Commit, send, and commit the enqueued_at stamps of the runs that went out, also when
    the broker failed part way (BrokerUnavailable then propagates: a 503 naming the rest)."""
    session.commit()  # refused once the request's deadline has passed (server/deadline.py)
    note_saved([run.id for run in runs])
    try:
        with waiting_on("the message broker"):
            send_runs(session, celery, runs)
    finally:
        session.commit()
