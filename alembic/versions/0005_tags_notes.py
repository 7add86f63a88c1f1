"""Tags and a note on runs and experiments.

run_tags and experiment_tags hold one row per (owner, tag): the primary key makes a tag
unique per owner, and the (tag, owner) index makes "runs tagged x" an index lookup on both
backends. runs.note and experiments.note are the user's free text. server/db/models.py says
why each looks as it does.

Revision ID: 0005_tags_notes
Revises: 0004
Create Date: 2026-12-02 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_tags_notes"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNERS = (("run_tags", "run_id", "runs"), ("experiment_tags", "experiment_id", "experiments"))


def upgrade() -> None:
    for table, owner_id, owner in OWNERS:
        op.create_table(
            table,
            sa.Column(owner_id, sa.Integer(), nullable=False),
            sa.Column("tag", sa.String(length=64), nullable=False),
            sa.ForeignKeyConstraint([owner_id], [f"{owner}.id"],
                                    name=op.f(f"fk_{table}_{owner_id}_{owner}"),
                                    ondelete="CASCADE"),
            sa.PrimaryKeyConstraint(owner_id, "tag", name=op.f(f"pk_{table}")),
        )
        op.create_index(f"ix_{table}_tag", table, ["tag", owner_id], unique=False)
    # A nullable column with no default: PostgreSQL adds it without rewriting the table, and
    # SQLite's ADD COLUMN needs no rebuild either (batch mode only wraps it).
    for owner in ("runs", "experiments"):
        with op.batch_alter_table(owner, schema=None) as batch_op:
            batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    # Tags and notes have no place in the old schema: they are dropped with their tables.
    for owner in ("experiments", "runs"):
        with op.batch_alter_table(owner, schema=None) as batch_op:
            batch_op.drop_column("note")
    for table, _owner_id, _owner in reversed(OWNERS):
        op.drop_index(f"ix_{table}_tag", table_name=table)
        op.drop_table(table)
