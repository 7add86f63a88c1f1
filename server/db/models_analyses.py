"""Analyses (docs/geometry.md): a run's saved networks measured outside the training loop."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, Real, utcnow

ANALYSIS_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ANALYSIS_ACTIVE = ("queued", "running")


class Snapshot(Base):
    """A run's weights and BN buffers saved at one step (worker/snapshot_index.py writes the
    file, then this row): the database says which steps an analysis can ask for."""

    __tablename__ = "snapshots"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(1000))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Analysis(Base):
    """One analysis of one run (server/analysis_spec.py says what it measures).

    Analyses created by one request share `group_id` (the id of the first of them), so an
    experiment's runs are compared with the same spec and the same direction seed. The worker
    moves the status; `prepared_steps` lists the steps whose directions and values are stored
    (their grid chunks may then run anywhere), and `heartbeat_at` the last sign of a worker:
    the reconciler sends again what a dead worker left (server/services/analysis_reconcile.py).
    """

    __tablename__ = "analyses"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in ANALYSIS_STATUSES) + ")", name="status"
        ),
        # A run's automatic analyses, at most one per entry of its experiment's list: a
        # redelivered success cannot create them twice (NULLs, requested ones, never clash).
        UniqueConstraint("run_id", "auto_index"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int | None] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int] = mapped_column(index=True)
    auto_index: Mapped[int | None]  # its entry in experiment.analyses; None: requested
    kind: Mapped[str] = mapped_column(String(16))
    bn_mode: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]  # the AnalysisSpec, steps resolved
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    queue: Mapped[str] = mapped_column(String(64))
    total_points: Mapped[int]
    done_points: Mapped[int] = mapped_column(default=0)
    prepared_steps: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text)
    cost: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None]  # None: committed but not yet handed to the broker
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]


class AnalysisPoint(Base):
    """One grid point of one analysed step. The primary key is the idempotency key: a chunk
    delivered twice, or run by two workers, stores each point once.

    loss and test_loss keep NaN (Real); acc and test_acc are NULL when not measured
    (regression; no test set), and a test_loss is only read when the spec asked for it."""

    __tablename__ = "analysis_points"
    __table_args__ = {"sqlite_with_rowid": False}

    analysis_id: Mapped[int] = mapped_column(
        ForeignKey("analyses.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(primary_key=True)
    idx: Mapped[int] = mapped_column(primary_key=True)  # grid_index(ix, iy, nx)
    loss: Mapped[float] = mapped_column(Real, nullable=True)
    acc: Mapped[float | None] = mapped_column(Float)
    test_loss: Mapped[float] = mapped_column(Real, nullable=True)
    test_acc: Mapped[float | None] = mapped_column(Float)


class AnalysisValue(Base):
    """A non-grid result of one analysed step (spectrum, trajectory, directions info,
    interpolation endpoints), JSON with non-finite numbers as "NaN"/"Infinity" strings."""

    __tablename__ = "analysis_values"

    analysis_id: Mapped[int] = mapped_column(
        ForeignKey("analyses.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
