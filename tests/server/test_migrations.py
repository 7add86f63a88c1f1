"""The migrated schema equals the models, on both backends, and migrations run both ways."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from server.db.migrate import downgrade, upgrade
from server.db.models import Base
from server.db.session import make_engine


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_models(migrated_db_url):
    assert _diff(migrated_db_url) == []


def test_downgrade_to_base_and_upgrade_again(migrated_db_url):
    downgrade(migrated_db_url, "base")
    engine = make_engine(migrated_db_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(migrated_db_url)
    assert _diff(migrated_db_url) == []


def test_upgrade_is_idempotent(migrated_db_url):
    upgrade(migrated_db_url)  # already at head: nothing to do, nothing fails
    assert _diff(migrated_db_url) == []
