"""Analyses: snapshots, analyses, their grid points and their values, and the analyses an
experiment runs on each run once it succeeds (server/db/models.py says why each looks as it
does).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"


def upgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("analyses", sa.JSON(), nullable=True))
    op.create_table(
        "snapshots",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_snapshots_run_id_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "step", name=op.f("pk_snapshots")),
    )
    op.create_table(
        "analyses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("auto_index", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("bn_mode", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("total_points", sa.Integer(), nullable=False),
        sa.Column("done_points", sa.Integer(), nullable=False),
        sa.Column("prepared_steps", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cost", sa.JSON(), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(STATUSES, name=op.f("ck_analyses_status")),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"],
                                name=op.f("fk_analyses_experiment_id_experiments"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_analyses_run_id_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analyses")),
        sa.UniqueConstraint("run_id", "auto_index", name=op.f("uq_analyses_run_id")),
    )
    with op.batch_alter_table("analyses", schema=None) as batch_op:
        for column in ("experiment_id", "group_id", "run_id", "status"):
            batch_op.create_index(batch_op.f(f"ix_analyses_{column}"), [column], unique=False)
    op.create_table(
        "analysis_points",
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("acc", sa.Float(), nullable=True),
        sa.Column("test_loss", sa.Float(), nullable=True),
        sa.Column("test_acc", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["analysis_id"], ["analyses.id"],
                                name=op.f("fk_analysis_points_analysis_id_analyses"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("analysis_id", "step", "idx", name=op.f("pk_analysis_points")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "analysis_values",
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["analysis_id"], ["analyses.id"],
                                name=op.f("fk_analysis_values_analysis_id_analyses"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("analysis_id", "step", "name", name=op.f("pk_analysis_values")),
    )


def downgrade() -> None:
    op.drop_table("analysis_values")
    op.drop_table("analysis_points")
    with op.batch_alter_table("analyses", schema=None) as batch_op:
        for column in ("status", "run_id", "group_id", "experiment_id"):
            batch_op.drop_index(batch_op.f(f"ix_analyses_{column}"))
    op.drop_table("analyses")
    op.drop_table("snapshots")
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_column("analyses")
