"""SqlAnalysisSink: an analysis's grid points and values into the database, as they come.

Each `points` call (one batched group of grid points, a few at most) is one transaction:
the points, insert-ignore on (analysis, step, index), so a chunk delivered twice or run by
two workers stores each point once; then the analysis's done_points recounted from the table
(exact whatever was inserted twice) and its heartbeat, so progress is live and the
reconciler can tell a working analysis from an abandoned one. `values` upserts by name: a
prepare run again writes the same values. Non-finite floats in values become "NaN",
"Infinity" and "-Infinity" (PostgreSQL's JSON has no literal for them); in points they are
stored as floats (Real keeps NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from server.db.models import Analysis, AnalysisPoint, AnalysisValue, utcnow
from server.db.session import with_retries
from server.schemas import json_float
from worker.engine.geometry.sink import GridValue
from worker.snapshot_index import insert_ignore


class AnalysisGone(Exception):
    """The analysis was deleted while a worker was writing to it."""


def json_safe(value: Any) -> Any:
    """`value` as a JSON column stores it on both backends: non-finite floats as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else json_float(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # a 0-d tensor or numpy scalar
        return json_safe(value.item())
    return value


def _float(v: float | None) -> float | None:
    return None if v is None else float(v)


def count_points(conn, analysis_id: int) -> int:
    return conn.scalar(select(func.count()).select_from(AnalysisPoint)
                       .where(AnalysisPoint.analysis_id == analysis_id)) or 0


class SqlAnalysisSink:
    def __init__(self, engine: Engine, analysis_id: int, *, outage_seconds: float = 0.0) -> None:
        self.engine = engine
        self.analysis_id = analysis_id
        self.outage_seconds = outage_seconds  # retry transient DB errors this long per write
        self.written = 0  # rows sent (some may have been stored already)

    def points(self, step: int, rows: Sequence[GridValue]) -> None:
        data = [{"analysis_id": self.analysis_id, "step": step, "idx": int(r.index),
                 "loss": float(r.loss), "acc": _float(r.acc), "test_loss": _float(r.test_loss),
                 "test_acc": _float(r.test_acc)} for r in rows]

        def write() -> None:
            with self.engine.begin() as conn:
                insert_ignore(conn, AnalysisPoint.__table__, data, ["analysis_id", "step", "idx"])
                self._progress(conn)

        self._retry(write, "points")
        self.written += len(data)

    def values(self, step: int, values: Mapping[str, Any]) -> None:
        data = [{"analysis_id": self.analysis_id, "step": step, "name": str(k),
                 "value": json_safe(v)} for k, v in values.items()]
        if not data:
            return

        def write() -> None:
            with self.engine.begin() as conn:
                insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                stmt = insert(AnalysisValue.__table__).values(data)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["analysis_id", "step", "name"],
                    set_={"value": stmt.excluded.value}))
                self._progress(conn)

        self._retry(write, "values")

    def _progress(self, conn) -> None:
        done = count_points(conn, self.analysis_id)
        conn.execute(update(Analysis).where(Analysis.id == self.analysis_id)
                     .values(done_points=done, heartbeat_at=utcnow()))

    def _retry(self, write, what: str) -> None:
        try:
            with_retries(write, deadline_s=self.outage_seconds,
                         what=f"analysis {self.analysis_id}: {what}")
        except IntegrityError as exc:  # the foreign key: the analysis row is gone
            raise AnalysisGone(f"analysis {self.analysis_id} was deleted") from exc
