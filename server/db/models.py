"""The database: the source of truth for experiments, runs, their state and their metrics.

Metrics are stored as series (one row per run and key) and points (series, step, value), keyed
by (series, step) so a redelivered task can insert the same point again and nothing duplicates.
Points and their rollups carry no foreign key: the check costs 40% of ingest throughput on
PostgreSQL, their only writer takes series ids from metric_series, and deleting a run deletes
them explicitly (server/db/metrics.py: delete_run_metrics).
Non-finite values are data: a point stores value NULL and a `flag` saying nan, +inf or -inf,
so SQL min/max over finite values stay meaningful on SQLite and PostgreSQL alike (SQLite
cannot store NaN at all). Per-eta probe records use `Real`, which keeps NaN on both.

The tables live in modules by role, all importable from here: experiments, runs and their
tags (this module), the metric tables (models_metrics.py), analyses and snapshots
(models_analyses.py), the service's bookkeeping (models_service.py), and the column types
and declarative base they share (base.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db.base import (  # noqa: F401  (re-exported: the models' one import path)
    FINITE,
    NAN,
    NEG_INF,
    POS_INF,
    Base,
    Real,
    UTCDateTime,
    decode_value,
    encode_value,
    utcnow,
)

# crashed: an SDK run whose training process stopped beating (server/services/reconcile.py);
# a heartbeat that arrives later revives it to running.
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "diverged", "cancelled", "crashed")
ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("succeeded", "failed", "diverged", "cancelled", "crashed")
# Run.source / Experiment.source: trained by a worker from a spec, or by a user's own loop
# through the SDK (landscope.init), which sends its metrics to POST /runs/{id}/ingest.
SOURCES = ("service", "sdk")


class Experiment(Base):
    """A group of runs submitted together: the cross product of `vary` over a base spec."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    preset: Mapped[str | None] = mapped_column(String(64))
    base_spec: Mapped[dict[str, Any]]
    vary: Mapped[dict[str, Any]]
    # AnalysisSpec dicts a worker creates for each run once it succeeds (server/services/
    # auto_analyses.py); [] none. NULL only on rows written before analyses existed.
    analyses: Mapped[list[Any] | None] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16), default="service", server_default="service")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)  # the user's own words, free text

    runs: Mapped[list[Run]] = relationship(back_populates="experiment", order_by="Run.id")
    # Tags load only when asked for: list reads ask with selectinload (one query per page).
    tag_rows: Mapped[list[ExperimentTag]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="ExperimentTag.tag")

    @property
    def tags(self) -> list[str]:
        return sorted(t.tag for t in self.tag_rows)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in RUN_STATUSES) + ")", name="status"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int | None] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    queue: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(default=0)  # steps done so far
    total: Mapped[int]  # steps asked for
    last_loss: Mapped[float | None] = mapped_column(Real)
    diverged_at: Mapped[int | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(default=0)  # deliveries that started the run
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None]  # None: committed but not yet handed to the broker
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    # SDK runs: spec is {} (no RunSpec: the user's loop is the spec), config the user's own
    # dict, client_id the SDK's uuid4 hex, so a retried init or a `landscope sync` of the
    # same offline run finds this row again. total is 0 when the SDK gave no plan.
    source: Mapped[str] = mapped_column(String(16), default="service", server_default="service")
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    client_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    note: Mapped[str | None] = mapped_column(Text)  # the user's own words, free text

    experiment: Mapped[Experiment | None] = relationship(back_populates="runs")
    tag_rows: Mapped[list[RunTag]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="RunTag.tag")

    @property
    def tags(self) -> list[str]:
        return sorted(t.tag for t in self.tag_rows)


# Tags: a row per (owner, tag), not a JSON list on the owner, so "runs tagged x and y" is an
# indexed lookup on both backends (the (tag, owner) index) instead of a scan through JSON.
# Deleting the owner deletes its tags (the foreign key cascades; SQLite has foreign_keys on).
TAG_CHARS = 64


class RunTag(Base):
    __tablename__ = "run_tags"
    __table_args__ = (Index("ix_run_tags_tag", "tag", "run_id"),)

    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(TAG_CHARS), primary_key=True)


class ExperimentTag(Base):
    __tablename__ = "experiment_tags"
    __table_args__ = (Index("ix_experiment_tags_tag", "tag", "experiment_id"),)

    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(TAG_CHARS), primary_key=True)


@event.listens_for(Run, "init")
@event.listens_for(Experiment, "init")
def _no_tags_yet(_target: Any, _args: Any, kwargs: dict[str, Any]) -> None:
    # A new row has no tags: known without asking, so answering a request that created
    # 64 runs does not look up each one's tags (an empty collection, not a lazy load).
    kwargs.setdefault("tag_rows", [])


# The other tables, by role; imported here so that `from server.db.models import X` stays the
# one import path for every table and Alembic's metadata sees them all.
from server.db.models_analyses import (  # noqa: E402, F401
    ANALYSIS_ACTIVE,
    ANALYSIS_STATUSES,
    Analysis,
    AnalysisPoint,
    AnalysisValue,
    Snapshot,
)
from server.db.models_metrics import (  # noqa: E402, F401
    ROLLUP_BASE,
    ROLLUP_LEVELS,
    DistributionRecord,
    Point,
    ProbeRecord,
    Rollup,
    Series,
)
from server.db.models_service import AdmissionLock, IdempotencyKey, WorkerRecord  # noqa: E402, F401
