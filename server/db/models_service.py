"""The service's own bookkeeping: workers, the admission lock, idempotency keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class WorkerRecord(Base):
    """A worker process that is or was online, kept fresh by its heartbeat."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(64))
    queues: Mapped[list[Any]]
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    current_run_id: Mapped[int | None]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]


class AdmissionLock(Base):
    """One row that every request adding runs updates first thing in its transaction.

    The update holds the row lock on PostgreSQL, and the database's write lock on SQLite,
    until commit: counting the active runs, inserting and committing then happen one request
    at a time, so concurrent requests cannot all see the same free room
    (server/services/admission.py). The migration inserts the row.
    """

    __tablename__ = "admission_lock"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    admitted: Mapped[int] = mapped_column(default=0)  # requests that added runs, ever


class IdempotencyKey(Base):
    """An Idempotency-Key and what its request created, written in the same transaction as
    the runs: a client that lost the answer (even to a crash right after the commit) retries
    with the same key and gets the same resource instead of a copy."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(32))  # "runs" | "experiments"
    request_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical body
    resource_id: Mapped[int]  # the run's or the experiment's id (no foreign key: runs go)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
