"""Migration 0005 (tags and notes) on rows that exist: old runs and experiments get no tags and
no note, a tag is unique per owner, deleting the owner deletes its tags, and a downgrade keeps
every run, experiment and metric (only the tags and notes go)."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from server.db.migrate import downgrade, upgrade
from server.db.session import make_engine

NOW = "2026-12-02 08:00:00+00:00"
RUN = ("INSERT INTO runs (id, experiment_id, name, spec, status, queue, step, total, "
       "cancel_requested, attempts, created_at) VALUES (:id, 1, 'r', '{}', 'succeeded', 'q', "
       "0, 10, false, 0, '" + NOW + "')")


def _rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text(sql))]


def test_existing_rows_survive_the_round_trip(migrated_db_url):
    url = migrated_db_url
    downgrade(url, "0004")
    engine = make_engine(url)
    try:
        assert "run_tags" not in inspect(engine).get_table_names()
        with engine.begin() as c:
            c.execute(text("INSERT INTO experiments (id, name, base_spec, vary, created_at) "
                           f"VALUES (1, 'e', '{{}}', '{{}}', '{NOW}')"))
            c.execute(text(RUN), {"id": 1})
            c.execute(text(RUN), {"id": 2})
            c.execute(text("INSERT INTO metric_series (id, run_id, key) VALUES (7, 1, 'k')"))
        upgrade(url)
        engine.dispose()
        assert _rows(engine, "SELECT id, note FROM runs ORDER BY id") == [(1, None), (2, None)]
        assert _rows(engine, "SELECT id, note FROM experiments") == [(1, None)]
        with engine.begin() as c:
            c.execute(text("UPDATE runs SET note = 'lr too high' WHERE id = 1"))
            c.execute(text("UPDATE experiments SET note = 'x' WHERE id = 1"))
            for run_id, tag in ((1, "baseline"), (1, "bn"), (2, "bn")):
                c.execute(text("INSERT INTO run_tags (run_id, tag) VALUES (:r, :t)"),
                          {"r": run_id, "t": tag})
            c.execute(text("INSERT INTO experiment_tags (experiment_id, tag) VALUES (1, 'bn')"))
            with pytest.raises(IntegrityError), c.begin_nested():  # once per run
                c.execute(text("INSERT INTO run_tags (run_id, tag) VALUES (1, 'bn')"))
            with pytest.raises(IntegrityError), c.begin_nested():  # of a run that exists
                c.execute(text("INSERT INTO run_tags (run_id, tag) VALUES (99, 'bn')"))
        with engine.begin() as c:  # the foreign key cascades
            c.execute(text("DELETE FROM runs WHERE id = 2"))
        assert _rows(engine, "SELECT run_id, tag FROM run_tags ORDER BY run_id, tag") == [
            (1, "baseline"), (1, "bn")]
        engine.dispose()
        downgrade(url, "0004")
        assert "run_tags" not in inspect(engine).get_table_names()
        assert "note" not in {c["name"] for c in inspect(engine).get_columns("runs")}
        assert _rows(engine, "SELECT id, name FROM runs") == [(1, "r")]
        assert _rows(engine, "SELECT id, name FROM experiments") == [(1, "e")]
        assert _rows(engine, "SELECT id, run_id FROM metric_series") == [(7, 1)]
        engine.dispose()
        upgrade(url)
        assert _rows(engine, "SELECT id, note FROM runs") == [(1, None)]
        assert _rows(engine, "SELECT COUNT(*) FROM run_tags") == [(0,)]
    finally:
        engine.dispose()


def test_a_tag_lookup_uses_the_index(migrated_db_url):
    """"Runs tagged x" reads the (tag, run_id) index, not every run_tags row."""
    engine = make_engine(migrated_db_url)
    try:
        with engine.begin() as c:
            if engine.dialect.name == "sqlite":
                plan = " ".join(str(r[-1]) for r in c.execute(text(
                    "EXPLAIN QUERY PLAN SELECT run_id FROM run_tags WHERE tag = 'bn'")))
                assert "ix_run_tags_tag" in plan, plan
            else:
                c.execute(text("SET LOCAL enable_seqscan = off"))  # tiny table: force the choice
                plan = " ".join(r[0] for r in c.execute(text(
                    "EXPLAIN SELECT run_id FROM run_tags WHERE tag = 'bn'")))
                assert "ix_run_tags_tag" in plan, plan
    finally:
        engine.dispose()
