"""The database: the source of truth for experiments, runs, their state and their metrics.

Metrics are stored as series (one row per run and key) and points (series, step, value), keyed
by (series, step) so a redelivered task can insert the same point again and nothing duplicates.
Points and their rollups carry no foreign key: the check costs 40% of ingest throughput on
PostgreSQL, their only writer takes series ids from metric_series, and deleting a run deletes
them explicitly (server/db/metrics.py: delete_run_metrics).
Non-finite values are data: a point stores value NULL and a `flag` saying nan, +inf or -inf,
so SQL min/max over finite values stay meaningful on SQLite and PostgreSQL alike (SQLite
cannot store NaN at all). Per-eta probe records use `Real`, which keeps NaN on both.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# crashed: an SDK run whose training process stopped beating (server/services/reconcile.py);
# a heartbeat that arrives later revives it to running.
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "diverged", "cancelled", "crashed")
ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("succeeded", "failed", "diverged", "cancelled", "crashed")
# Run.source / Experiment.source: trained by a worker from a spec, or by a user's own loop
# through the SDK (landscope.init), which sends its metrics to POST /runs/{id}/ingest.
SOURCES = ("service", "sdk")

ROLLUP_BASE = 64
ROLLUP_LEVELS = 3  # buckets of 64, 4096 and 262144 steps

# Point.flag values.
FINITE, NAN, POS_INF, NEG_INF = 0, 1, 2, 3


def encode_value(v: float) -> tuple[float | None, int]:
    """(value, flag) as stored in metric_points."""
    if math.isfinite(v):
        return v, FINITE
    if math.isnan(v):
        return None, NAN
    return None, POS_INF if v > 0 else NEG_INF


def decode_value(value: float | None, flag: int) -> float:
    if flag == FINITE:
        return float(value)  # type: ignore[arg-type]
    return {NAN: math.nan, POS_INF: math.inf, NEG_INF: -math.inf}[flag]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both backends (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Real(TypeDecorator):
    """A float column that keeps NaN: SQLite stores NaN as NULL, so NULL reads back as NaN."""

    impl = Float
    cache_ok = True

    def process_result_value(self, value: float | None, dialect: Any) -> float:
        return math.nan if value is None else value


naming = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=naming)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


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


# -- analyses (docs/geometry.md): a run's saved networks measured outside the training loop ----

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
