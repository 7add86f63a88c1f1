"""`landscope db upgrade`: apply the database migrations (for split deployments; `landscope up`
and `landscope api` do it themselves). Imports no torch."""

from __future__ import annotations

import argparse
import sys

from server.settings import get_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="manage the database")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser(
        "upgrade", help="apply every migration (LANDSCOPE_DATABASE_URL; default a SQLite file)"
    )
    up.set_defaults(handler=upgrade)


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def migrate(url: str) -> None:
    from server.db.migrate import upgrade as alembic_upgrade

    print(f"landscope: database {shown_url(url)}: applying migrations", file=sys.stderr)
    alembic_upgrade(url)


def upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        migrate(get_settings().db_url)
    except SQLAlchemyError as exc:
        print(f"landscope: error: cannot migrate the database: {exc}", file=sys.stderr)
        return 1
    print("landscope: the database schema is up to date", file=sys.stderr)
    return 0
