"""The analyses' reconciler: the database says what work is left; send it again.

Three ways an analysis can be stranded, and the fix:
1. saved but never sent (the broker was down when it was created): send its prepare task;
2. queued and sent, but its prepare message is gone (Redis restarted or flushed before a
   worker took it): send the prepare task again, when the broker can be read and shows no
   live message for it (waiting, or delivered and not yet acknowledged);
3. running, but no worker has touched it for stale_after seconds (killed mid-chunk: with
   late acks its message stays unacknowledged on Redis for the visibility timeout, and the
   embedded broker never shows a delivered message again): send the prepare task if a step
   is not prepared (or the analysis has no grid), else every chunk that still misses a
   point (else its first chunk, whose task then finds nothing to do and finishes it), and
   stamp the heartbeat so the next pass waits a full period for them.
   A task still waiting in a queue is not sent again: an analysis whose chunks wait behind
   a long run is silent too, and resending them on every pass would flood the queue. (A
   message delivered and unacknowledged is no longer waiting: if its worker were alive,
   the analysis would not be silent.) For a broker that cannot be read, everything missing
   is sent.
Sending twice is harmless: points are insert-ignore and a chunk skips what is stored.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from server.analysis_spec import AnalysisSpec, chunks
from server.db.models import Analysis, AnalysisPoint, utcnow
from server.db.session import transaction
from server.queue import (
    ANALYSIS_CHUNK_TASK,
    ANALYSIS_PREPARE_TASK,
    QUEUES,
    send_analysis_chunk,
    send_analysis_prepare,
)
from server.settings import Settings

log = logging.getLogger("landscope.reconcile")


@dataclass
class ReconciledAnalyses:
    sent: list[int] = field(default_factory=list)  # never sent: prepare sent now
    resent: dict[int, list[tuple[str, int, int]]] = field(default_factory=dict)  # stale
    lost: list[int] = field(default_factory=list)  # queued, message gone: prepare sent again


def _missing(session: Session, a: Analysis, spec: AnalysisSpec) -> list[tuple[int, int]]:
    """(step, chunk index) of every chunk with a point not stored yet."""
    stored: dict[int, set[int]] = {}
    for step, idx in session.execute(select(AnalysisPoint.step, AnalysisPoint.idx)
                                     .where(AnalysisPoint.analysis_id == a.id)):
        stored.setdefault(step, set()).add(idx)
    cut = chunks(spec.grid_points(), spec.chunk_points)
    return [(step, i) for step in spec.steps or [] for i, rng in enumerate(cut)
            if any(k not in stored.get(step, ()) for k in rng)]


Task = tuple  # ("prepare", analysis_id) or ("chunk", analysis_id, step, chunk index)


def _task_of(raw: bytes | str) -> Task | None:
    """The analysis task a serialized Celery message (protocol 2) carries, or None."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # the unacked hash stores [message, exchange, routing_key]
            msg = msg[0]
        name = msg.get("headers", {}).get("task")
        if name not in (ANALYSIS_PREPARE_TASK, ANALYSIS_CHUNK_TASK):
            return None
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = [int(a) for a in json.loads(body)[0]]
        return ("prepare", args[0]) if name == ANALYSIS_PREPARE_TASK else ("chunk", *args[:3])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def waiting_tasks(settings: Settings, *, unacked: bool = False) -> set[Task] | None:
    """Analysis tasks waiting in a queue (not yet delivered), and with `unacked` also those
    delivered to a worker and not yet acknowledged; None: the broker is unknown. (The
    embedded broker never shows a delivered message again: there, waiting is all there is.)"""
    url = settings.broker
    if url.startswith(("redis://", "rediss://")):
        import redis

        prefix = settings.broker_key_prefix
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
        try:
            # kombu keeps priority levels 3, 6 and 9 in lists named queue + "\x06\x16" + level.
            names = [q for base in QUEUES.values()
                     for q in (base, *(f"{base}\x06\x16{p}" for p in (3, 6, 9)))]
            pipe = client.pipeline()
            for name in names:
                pipe.lrange(prefix + name, 0, -1)
            if unacked:
                pipe.hvals(prefix + "unacked")
            payloads: Iterable = [p for chunk in pipe.execute() for p in chunk]
            return {t for t in map(_task_of, payloads) if t is not None}
        finally:
            client.close()
    if url.startswith("sqla+"):
        from server.db.session import make_engine

        engine = make_engine(url.removeprefix("sqla+"))
        try:
            with engine.connect() as conn:
                if "kombu_message" not in conn.dialect.get_table_names(conn):
                    return set()
                rows = conn.execute(text("SELECT payload FROM kombu_message WHERE visible"))
                return {t for t in (_task_of(r[0]) for r in rows) if t is not None}
        finally:
            engine.dispose()
    return None


def _resend_lost(factory: sessionmaker[Session], celery: Celery, settings: Settings,
                 sent_before) -> list[int]:
    """Queued analyses, sent before `sent_before`, with no live prepare message: send again.
    Only when the broker can be read: for an unknown broker, nothing is guessed."""
    live = waiting_tasks(settings, unacked=True)
    if live is None:
        return []
    lost: list[int] = []
    with transaction(factory) as s:
        queued = s.scalars(
            select(Analysis).where(Analysis.status == "queued", Analysis.enqueued_at.is_not(None),
                                   Analysis.enqueued_at <= sent_before)
            .order_by(Analysis.id).with_for_update(skip_locked=True))
        for a in queued:
            if ("prepare", a.id) in live:
                continue
            send_analysis_prepare(celery, a.id, a.queue)
            a.enqueued_at = utcnow()  # the next pass gives this message a full grace period
            s.flush()
            lost.append(a.id)
            log.warning("analysis %s: queued, but its message is gone; sent again", a.id)
    return lost


def reconcile_analyses(factory: sessionmaker[Session], celery: Celery, settings: Settings,
                       *, grace: float = 10.0) -> ReconciledAnalyses:
    """One pass; a broker failure propagates (what was sent before it is stamped)."""
    out = ReconciledAnalyses()
    now = utcnow()
    with transaction(factory) as s:
        unsent = s.scalars(
            select(Analysis).where(Analysis.status == "queued", Analysis.enqueued_at.is_(None),
                                   Analysis.created_at <= now - timedelta(seconds=grace))
            .order_by(Analysis.id).with_for_update(skip_locked=True))
        for a in unsent:
            send_analysis_prepare(celery, a.id, a.queue)
            a.enqueued_at = utcnow()
            s.flush()
            out.sent.append(a.id)
    out.lost = _resend_lost(factory, celery, settings, now - timedelta(seconds=grace))
    cutoff = now - timedelta(seconds=settings.stale_after_seconds)
    waiting = waiting_tasks(settings) or set()
    with transaction(factory) as s:
        stale = s.scalars(
            select(Analysis).where(Analysis.status == "running",
                                   or_(Analysis.heartbeat_at.is_(None),
                                       Analysis.heartbeat_at < cutoff))
            .order_by(Analysis.id).with_for_update(skip_locked=True))
        for a in stale:
            spec = AnalysisSpec.model_validate(a.spec)
            silent_since = a.heartbeat_at
            prepared = {int(x) for x in a.prepared_steps}
            sent: list[tuple[str, int, int]] = []
            if not set(spec.steps or []) <= prepared or spec.grid_points() == 0:
                if ("prepare", a.id) not in waiting:
                    send_analysis_prepare(celery, a.id, a.queue)
                    sent.append(("prepare", 0, 0))
            else:
                todo = _missing(s, a, spec) or [((spec.steps or [0])[0], 0)]
                for step, i in todo:
                    if ("chunk", a.id, step, i) not in waiting:
                        send_analysis_chunk(celery, a.id, step, i, a.queue)
                        sent.append(("chunk", step, i))
            a.heartbeat_at = utcnow()
            s.flush()
            if not sent:
                continue  # its work waits in a queue
            out.resent[a.id] = sent
            log.warning("analysis %s: silent since %s; sent again: %s", a.id, silent_since,
                        sent)
    return out
