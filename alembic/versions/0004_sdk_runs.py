"""SDK runs: runs trained by a user's own loop (landscope.init) rather than by a worker.

runs.source and experiments.source ('service' | 'sdk'), runs.config (the SDK's free config
dict), runs.client_id (the SDK's idempotency key, unique), and the status 'crashed' (an SDK
run whose heartbeat stopped). server/db/models.py says why each looks as it does.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = ("queued", "running", "succeeded", "failed", "diverged", "cancelled")
NEW = (*OLD, "crashed")


def _status_check(statuses: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def upgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=16), nullable=False,
                                      server_default="service"))
    # SQLite rebuilds the table (batch mode) to change the CHECK; PostgreSQL alters in place.
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=16), nullable=False,
                                      server_default="service"))
        batch_op.add_column(sa.Column("config", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("client_id", sa.String(length=32), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_runs_client_id"), ["client_id"])
        batch_op.drop_constraint(batch_op.f("ck_runs_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_runs_status"), _status_check(NEW))


def downgrade() -> None:
    # Crashed SDK runs have no place in the old schema's statuses: they count as failed.
    op.execute("UPDATE runs SET status = 'failed' WHERE status = 'crashed'")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_runs_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_runs_status"), _status_check(OLD))
        batch_op.drop_constraint(batch_op.f("uq_runs_client_id"), type_="unique")
        batch_op.drop_column("client_id")
        batch_op.drop_column("config")
        batch_op.drop_column("source")
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_column("source")
