"""The metric tables: series, points, rollups, per-eta probe records and activation
histograms (see server/db/models.py for how non-finite values are stored)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Float,
    ForeignKey,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import FINITE, Base, Real

ROLLUP_BASE = 64
ROLLUP_LEVELS = 3  # buckets of 64, 4096 and 262144 steps


class Series(Base):
    """One metric key of one run; its points live in metric_points."""

    __tablename__ = "metric_series"
    __table_args__ = (UniqueConstraint("run_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))


class Point(Base):
    """One scalar at one step. The primary key is the idempotency key of metric writes."""

    __tablename__ = "metric_points"
    # WITHOUT ROWID: SQLite clusters the rows by (series, step), as a range scan wants.
    __table_args__ = {"sqlite_with_rowid": False}

    series_id: Mapped[int] = mapped_column(primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)  # NULL when not finite (see flag)
    flag: Mapped[int] = mapped_column(SmallInteger, default=FINITE)


class Rollup(Base):
    """Pre-aggregated buckets of points: level L covers ROLLUP_BASE**L steps per bucket.

    Kept exact by recomputing every bucket a write touches from the level below, in the
    same transaction as the points; so a downsampled read of a million points groups a few
    thousand rollup rows instead of scanning the million.
    """

    __tablename__ = "metric_rollups"
    __table_args__ = {"sqlite_with_rowid": False}

    series_id: Mapped[int] = mapped_column(primary_key=True)
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    bucket: Mapped[int] = mapped_column(primary_key=True)  # step // ROLLUP_BASE**level
    n: Mapped[int]  # points
    n_bad: Mapped[int]  # non-finite points among them
    vsum: Mapped[float | None] = mapped_column(Float)  # over finite values
    vmin: Mapped[float | None] = mapped_column(Float)
    vmax: Mapped[float | None] = mapped_column(Float)
    step_min: Mapped[int]
    step_max: Mapped[int]


class ProbeRecord(Base):
    """One step size of one landscape probe (Fig 11 plots every d(eta), not just bands)."""

    __tablename__ = "probe_records"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    probe: Mapped[str] = mapped_column(String(32), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True)
    multiplier: Mapped[float] = mapped_column(Float, primary_key=True)
    eta: Mapped[float] = mapped_column(Float)
    loss: Mapped[float] = mapped_column(Real, nullable=True)
    grad_dist: Mapped[float] = mapped_column(Real, nullable=True)


class DistributionRecord(Base):
    """A fixed-bin histogram of one normalised layer (or of its sampled unit) at one step.

    `stats` holds mean, var and quantiles as JSON with non-finite numbers written as the
    strings "NaN", "Infinity" and "-Infinity" (JSON has no literal for them).
    """

    __tablename__ = "distributions"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    layer: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)  # "layer" | "unit"
    step: Mapped[int] = mapped_column(primary_key=True)
    unit: Mapped[int | None]
    lo: Mapped[float] = mapped_column(Float)
    hi: Mapped[float] = mapped_column(Float)
    counts: Mapped[list[Any]]
    underflow: Mapped[int]
    overflow: Mapped[int]
    nonfinite: Mapped[int]
    stats: Mapped[dict[str, Any]]
