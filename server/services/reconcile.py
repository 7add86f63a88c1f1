"""The reconciler: the database says what should be on the broker; make it so.

The database is the source of truth for runs. Three ways a run can be stranded, and the fix:
1. saved but never sent (the broker was down when it was submitted): send it;
2. queued, sent, but its message is gone (Redis restarted or flushed): send it again;
3. running under a worker whose heartbeat went stale (killed, host lost): put it back in the
   queue and send it; the next worker resumes from the run's last checkpoint.
Sending a run twice is harmless: a worker claims a run only when it is queued or its
heartbeat is stale (worker/runner.py), so a second message finds nothing to do.
SDK runs (a user's own loop trains them) are never requeued nor sent: when their heartbeat
goes stale they become `crashed` (server/services/sdk_runs.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from server.broker_inspect import live_run_ids
from server.db.models import Run, utcnow
from server.queue import declare_queues
from server.services.runs import send_runs
from server.services.sdk_runs import mark_crashed
from server.settings import Settings

log = logging.getLogger("landscope.reconcile")

# A run saved or sent this recently may still be on its way: leave it to its request.
GRACE_SECONDS = 10.0


@dataclass
class Reconciled:
    requeued: list[int] = field(default_factory=list)  # stale running runs put back
    resent: list[int] = field(default_factory=list)  # queued runs sent (again)
    crashed: list[int] = field(default_factory=list)  # sdk runs whose heartbeat stopped
    broker_view: bool = True  # False: the broker's messages could not be listed


def requeue_stale(session: Session, stale_seconds: float) -> list[int]:
    """Running runs whose heartbeat is older than `stale_seconds` go back to queued."""
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    stale = select(Run.id).where(
        Run.source == "service", Run.status == "running",
        or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < cutoff),
    )
    ids = list(session.scalars(stale))
    if ids:
        # Conditional on the same test: a worker whose beat lands meanwhile keeps its run.
        session.execute(
            update(Run)
            .where(Run.id.in_(ids), Run.status == "running",
                   or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < cutoff))
            .values(status="queued", worker=None, enqueued_at=None)
        )
    return ids


def stranded_queued(session: Session, live: set[int] | None, grace: float) -> list[Run]:
    """Queued runs that need a message: never sent, or (when the broker's live messages are
    known) sent but no longer there; either at least `grace` seconds ago."""
    cutoff = utcnow() - timedelta(seconds=grace)
    unsent = Run.enqueued_at.is_(None) & (Run.created_at <= cutoff)
    cond = unsent
    if live is not None:
        lost = (Run.enqueued_at <= cutoff) & Run.id.not_in(live or {-1})
        cond = or_(unsent, lost)
    stmt = (
        select(Run)
        .where(Run.source == "service", Run.status == "queued",
               Run.cancel_requested.is_(False), cond)
        .order_by(Run.id)
        .with_for_update(skip_locked=True)  # two API replicas never both send a run
    )
    return list(session.scalars(stmt))


def reconcile(factory: sessionmaker[Session], celery_app: Celery, settings: Settings,
              *, grace: float = GRACE_SECONDS) -> Reconciled:
    """One pass. Raises BrokerUnavailable if sending fails (the runs stay queued, unsent).

    `grace`: leave alone runs saved or sent more recently (a request may still be sending
    them); at startup no request of this process can be, so the first pass uses 0."""
    out = Reconciled()
    with factory() as session, session.begin():
        out.requeued = requeue_stale(session, settings.stale_after_seconds)
        out.crashed = mark_crashed(session, settings.sdk_heartbeat_timeout_seconds)
    try:
        live = live_run_ids(settings)
    except Exception as exc:  # noqa: BLE001 - any failure to look means: do not guess
        log.warning("reconcile: cannot list the broker's messages: %s", exc)
        live, out.broker_view = None, False
    with factory() as session:
        runs = stranded_queued(session, live, grace)
        # Requeued runs were just set unsent; they are old enough to skip the grace period.
        fresh = [r for r in session.scalars(select(Run).where(Run.id.in_(out.requeued),
                                                              Run.status == "queued"))
                 if r not in runs]
        try:
            if runs or fresh:
                try:
                    declare_queues(celery_app)  # the broker may have lost its bindings too
                except Exception as exc:  # noqa: BLE001 - unreachable: send_runs says so
                    log.warning("reconcile: cannot declare the queues: %s", exc)
            send_runs(session, celery_app, runs + fresh)
        finally:
            session.commit()  # keep the stamps of the runs that were sent before a failure
        out.resent = sorted(r.id for r in runs + fresh)
    if out.requeued or out.resent:
        log.warning("reconcile: requeued %s, sent %s", out.requeued, out.resent)
    if out.crashed:
        log.warning("reconcile: sdk runs %s crashed (no heartbeat)", out.crashed)
    return out
