"""Checks of the database and the broker (server/services/health.py runs them for
/health), and the workers that are online."""

from __future__ import annotations

from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from server.db.models import WorkerRecord, utcnow
from server.queue import QUEUES
from server.schemas import ComponentHealth, WorkerOut
from server.services.views import worker_out
from server.settings import Settings

# A worker that missed this many heartbeats in a row is offline (crashed, or its host is gone).
MISSED_HEARTBEATS = 5


def check_database(engine: Engine) -> ComponentHealth:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach it is the answer, not an error
        return ComponentHealth(ok=False, error=_short(exc))
    return ComponentHealth(ok=True)


def check_broker(app: Celery) -> ComponentHealth:
    """Connect and declare the shared queue: declaring reads the queue's depth, so it reaches
    the broker's storage (connecting alone touches nothing on the embedded SQL broker)."""
    try:
        with app.connection_for_write() as conn:
            # One quick retry: kombu's default waits 2 s before it, too long for a probe.
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)
            conn.default_channel.queue_declare(QUEUES["auto"], durable=True, auto_delete=False)
    except Exception as exc:
        return ComponentHealth(ok=False, error=_short(exc))
    return ComponentHealth(ok=True)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def _online_since(settings: Settings) -> datetime:
    """Online = not stopped and seen since this moment (within a few heartbeats)."""
    return utcnow() - timedelta(seconds=MISSED_HEARTBEATS * settings.heartbeat_seconds)


def list_workers(session: Session, settings: Settings, include_offline: bool) -> list[WorkerOut]:
    """Workers by name, each marked online or not."""
    cutoff = _online_since(settings)
    out = []
    for w in session.scalars(select(WorkerRecord).order_by(WorkerRecord.name)):
        online = w.stopped_at is None and w.last_seen >= cutoff
        if online or include_offline:
            out.append(worker_out(w, online))
    return out


def served_queues(session: Session, settings: Settings) -> frozenset[str]:
    """The queues some online worker consumes: one query, for a whole page of runs."""
    rows = session.scalars(select(WorkerRecord.queues).where(
        WorkerRecord.stopped_at.is_(None), WorkerRecord.last_seen >= _online_since(settings)))
    return frozenset(q for queues in rows for q in queues or ())
