"""Database models, engines and migrations (SQLAlchemy 2, Alembic)."""
