"""Admission: the queue limit and the Idempotency-Key, decided one request at a time.

Counting the active runs and then inserting is a race: ten requests could all count the same
empty queue and all be accepted. So a request that adds runs first updates the one row of
admission_lock; that update holds the row lock on PostgreSQL and the database's write lock on
SQLite until the request's transaction ends, so count, insert and commit never interleave.
On SQLite the update must be the transaction's first statement (the driver opens the
transaction at the first write, so earlier reads do not count): a transaction that read
first holds a snapshot that may be stale by the time it gets the write lock, and SQLite then
fails it (SQLITE_BUSY_SNAPSHOT) instead of waiting. Validation is done before the lock: the
lock is held only for a count and the inserts.

An Idempotency-Key is stored with what its request created, in the same transaction, so a
retry finds it even when the server died between its commit and its answer. The key is looked
up under the same lock, so two requests with one key create one resource: the second waits
for the first to commit and then answers as a replay.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from server.db.models import ACTIVE_STATUSES, AdmissionLock, IdempotencyKey, Run, utcnow
from server.services.errors import InvalidRequest, QueueFull
from server.settings import Settings

KEY_TTL = timedelta(hours=24)  # an older key counts as unused (and is purged)
KEY_LOC = ("header", "Idempotency-Key")


@dataclass(frozen=True)
class Claim:
    """A request's Idempotency-Key, the endpoint it was sent to and a digest of its body."""

    key: str
    endpoint: str  # "runs" | "experiments"
    digest: str


def claim(key: str | None, endpoint: str, body: BaseModel) -> Claim | None:
    if key is None:
        return None
    # Canonical: sorted keys, defaults filled in, NaN kept apart from null.
    text = json.dumps(body.model_dump(), sort_keys=True, separators=(",", ":"),
                      allow_nan=True, default=repr)
    return Claim(key, endpoint, hashlib.sha256(text.encode()).hexdigest())


def prior_resource(session: Session, c: Claim | None) -> int | None:
    """The id of what this claim's key created within KEY_TTL, or None. A key first used
    for another endpoint or another body is a 422: a replay would answer a different
    question."""
    if c is None:
        return None
    row = session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.key == c.key, IdempotencyKey.created_at >= utcnow() - KEY_TTL
        )
    )
    if row is None:
        return None
    if row.endpoint != c.endpoint:
        raise InvalidRequest(KEY_LOC, f"this key was used for POST /{row.endpoint} at "
                             f"{row.created_at:%Y-%m-%d %H:%M:%S} UTC; use a new key for a "
                             "new request", "idempotency_key_reused")
    if row.request_hash != c.digest:
        raise InvalidRequest(KEY_LOC, "this key was used with a different request body at "
                             f"{row.created_at:%Y-%m-%d %H:%M:%S} UTC; use a new key for a "
                             "new request", "idempotency_key_reused")
    return row.resource_id


def admit(session: Session, settings: Settings, new: int, c: Claim | None) -> int | None:
    """Take the admission lock (first statement of the transaction: see the module doc),
    then: the id of what the claim's key already created (nothing to add; the caller
    replays it), or None once `new` more runs fit in the queue (QueueFull if not)."""
    locked = session.execute(
        update(AdmissionLock).where(AdmissionLock.id == 1)
        .values(admitted=AdmissionLock.admitted + 1)
    ).rowcount
    if locked != 1:
        raise RuntimeError("the admission_lock row is missing: run `landscope db upgrade`")
    prior = prior_resource(session, c)
    if prior is None:
        check_queue_room(session, settings, new)
    return prior


def check_queue_room(session: Session, settings: Settings, new: int) -> None:
    """Refuse work past max_queued_runs (queued + running, all experiments together)."""
    active = session.scalar(
        select(func.count()).select_from(Run)
        .where(Run.status.in_(ACTIVE_STATUSES), Run.source == "service")
    )  # sdk runs train in their users' processes: they take no worker's room
    if active + new > settings.max_queued_runs:
        raise QueueFull(
            f"{active} runs are queued or running and this request adds {new}; the server "
            f"takes at most {settings.max_queued_runs} (LANDSCOPE_MAX_QUEUED_RUNS). "
            "Try again when some have finished."
        )


def remember(session: Session, c: Claim | None, resource_id: int) -> None:
    """Store the claim's key with what it created (under the admission lock, in the
    creating transaction), purging expired keys first: one of them may be this very key."""
    if c is None:
        return
    now = utcnow()
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < now - KEY_TTL))
    session.add(IdempotencyKey(key=c.key, endpoint=c.endpoint, request_hash=c.digest,
                               resource_id=resource_id, created_at=now))
    session.flush()
