"""Migration 0004 (SDK runs) on rows that exist: old runs and experiments become 'service',
the new status is enforced, client_id is unique, and a downgrade keeps every row (a crashed
SDK run counts as failed in the old schema)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from server.db.migrate import downgrade, upgrade
from server.db.session import make_engine

NOW = "2026-12-02 08:00:00+00:00"
RUN = ("INSERT INTO runs (id, experiment_id, name, spec, status, queue, step, total, "
       "cancel_requested, attempts, created_at{extra}) VALUES (:id, {exp}, 'r', '{{}}', "
       ":status, 'q', 0, 10, false, 0, '" + NOW + "'{values})")


def _rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text(sql))]


def test_existing_rows_survive_the_round_trip(migrated_db_url):
    url = migrated_db_url
    downgrade(url, "0003")
    engine = make_engine(url)
    try:
        with engine.begin() as c:
            c.execute(text("INSERT INTO experiments (id, name, base_spec, vary, created_at) "
                           f"VALUES (1, 'e', '{{}}', '{{}}', '{NOW}')"))
            c.execute(text(RUN.format(extra="", exp="1", values="")),
                      {"id": 1, "status": "succeeded"})
            # Rows that reference the run: a rebuilt table must not cascade to them.
            c.execute(text("INSERT INTO metric_series (id, run_id, key) VALUES (7, 1, 'k')"))
            c.execute(text("INSERT INTO probe_records VALUES (1, 'landscape', 0, 1, 0.1, 2, 3)"))
            with pytest.raises(IntegrityError), c.begin_nested():  # not a status yet
                c.execute(text(RUN.format(extra="", exp="NULL", values="")),
                          {"id": 2, "status": "crashed"})
        upgrade(url)
        assert _rows(engine, "SELECT id, source, config, client_id FROM runs") == [
            (1, "service", None, None)]
        assert _rows(engine, "SELECT source FROM experiments") == [("service",)]
        with engine.begin() as c:
            sdk = RUN.format(extra=", source, client_id", exp="NULL", values=", 'sdk', :cid")
            c.execute(text(sdk), {"id": 2, "status": "crashed", "cid": "a" * 32})
            with pytest.raises(IntegrityError), c.begin_nested():  # one run per client_id
                c.execute(text(sdk), {"id": 3, "status": "running", "cid": "a" * 32})
            with pytest.raises(IntegrityError), c.begin_nested():  # the CHECK still holds
                c.execute(text(sdk), {"id": 4, "status": "lost", "cid": "b" * 32})
        engine.dispose()
        assert _rows(engine, "SELECT id, run_id FROM metric_series") == [(7, 1)]
        downgrade(url, "0003")
        assert _rows(engine, "SELECT id, status FROM runs ORDER BY id") == [
            (1, "succeeded"), (2, "failed")]
        assert _rows(engine, "SELECT id, run_id FROM metric_series") == [(7, 1)]
        assert _rows(engine, "SELECT run_id, probe FROM probe_records") == [(1, "landscape")]
        upgrade(url)
        assert _rows(engine, "SELECT id, source FROM runs ORDER BY id") == [
            (1, "service"), (2, "service")]  # (which source it was is not kept below 0004)
    finally:
        engine.dispose()
