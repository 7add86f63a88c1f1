"""Alembic environment: the target is server.db.models; the URL comes from the config
(set by server.db.migrate) or else from the settings, never from a hard-coded string."""

from __future__ import annotations

from alembic import context

from server.db.models import Base
from server.db.session import make_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from server.settings import get_settings

    return get_settings().db_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, render_as_batch=True,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A rebuilt table is dropped and replaced; with foreign keys on, dropping `runs`
            # would cascade to every row that references it (metrics, analyses). The pragma
            # only works outside a transaction, so before the migrations' one begins.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        # batch mode: SQLite cannot ALTER most things; Alembic rebuilds tables there instead.
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite and (bad := connection.exec_driver_sql("PRAGMA foreign_key_check")
                           .fetchall()):
                raise RuntimeError(f"migration left rows with dangling foreign keys: {bad}")
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
