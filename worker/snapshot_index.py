"""IndexedSnapshotStore: a run's snapshot files, and their index in the snapshots table.

The file is written first (atomically, by DirectorySnapshotStore), then its row: a row always
names a complete file. A worker that dies between the two leaves a file without a row; the
next store opened on that directory (the run's resumption) indexes every file it finds, so
the table catches up with the files. Rows are insert-ignore on (run_id, step): a resumed run
or a redelivered task duplicates nothing. The API reads the table to know which steps an
analysis may ask for (server/services/analyses.py); the workers read the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from server.db.models import Snapshot, utcnow
from server.db.session import with_retries
from server.services.analyses import snapshot_dir
from worker.engine.snapshots import DirectorySnapshotStore

__all__ = ["IndexedSnapshotStore", "insert_ignore", "snapshot_dir"]


def insert_ignore(conn, table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Insert rows, leaving any whose key is already stored as it is (both backends)."""
    if not rows:
        return
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert(table).values(rows).on_conflict_do_nothing(index_elements=keys))


class IndexedSnapshotStore:
    """The SnapshotStore protocol over DirectorySnapshotStore, each save indexed in SQL."""

    def __init__(self, engine: Engine, run_id: int, directory: Path, *,
                 outage_seconds: float = 0.0) -> None:
        self.files = DirectorySnapshotStore(directory)
        self.engine = engine
        self.run_id = run_id
        self.outage_seconds = outage_seconds
        self._index(self.files.steps())  # files a dead worker saved but never indexed

    def save(self, step: int, state: dict[str, Any]) -> None:
        self.files.save(step, state)
        self._index([step])

    def steps(self) -> list[int]:
        return self.files.steps()

    def load(self, step: int) -> dict[str, Any]:
        return self.files.load(step)

    def indexed(self) -> list[int]:
        with self.engine.connect() as c:
            return list(c.scalars(select(Snapshot.step).where(Snapshot.run_id == self.run_id)
                                  .order_by(Snapshot.step)))

    def _index(self, steps: list[int]) -> None:
        if not steps:
            return
        now = utcnow()
        rows = [{"run_id": self.run_id, "step": s, "path": str(self.files.path(s)),
                 "bytes": self.files.path(s).stat().st_size, "created_at": now} for s in steps]

        def write() -> None:
            with self.engine.begin() as conn:
                insert_ignore(conn, Snapshot.__table__, rows, ["run_id", "step"])

        with_retries(write, deadline_s=self.outage_seconds,
                     what=f"run {self.run_id}: snapshot index")
