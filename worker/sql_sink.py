"""SqlSink: the engine's metrics into the database, in batches, readable while the run trains.

The training thread only appends to an in-memory buffer. A small daemon writer thread commits
batches every `flush_seconds` (so the dashboard sees new points within a second even while one
slow step holds the training thread) and as soon as `flush_points` rows are waiting, so the
database round trips overlap with training. Only if the writer falls behind by a second batch
does the training thread write itself: that back-pressure bounds memory. flush() (before each
checkpoint, at the end) writes synchronously.

Every write is insert-ignore on the metric's natural key (server/db/metrics.py), so a run
that resumes from a checkpoint, or a redelivered task, re-inserts what it measures again and
nothing duplicates. Non-finite values are stored, never dropped: scalars as value NULL plus a
flag (encode_value), per-eta losses as NaN/inf floats, distribution stats as JSON strings.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine

from server.db.metrics import (
    insert_distributions,
    insert_points,
    insert_probe_records,
    series_ids,
)
from server.db.models import encode_value
from server.db.session import with_retries
from worker.engine.sink import Distribution, EtaRecord

log = logging.getLogger(__name__)


def json_float(x: float) -> float | str:
    """JSON has no NaN or infinity: they are written as the strings JavaScript's JSON uses."""
    x = float(x)
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def distribution_row(run_id: int, step: int, d: Distribution) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "layer": d.layer,
        "scope": d.scope,
        "step": step,
        "unit": d.unit,
        "lo": d.lo,
        "hi": d.hi,
        "counts": [int(c) for c in d.counts],
        "underflow": int(d.underflow),
        "overflow": int(d.overflow),
        "nonfinite": int(d.nonfinite),
        "stats": {
            "mean": json_float(d.mean),
            "var": json_float(d.var),
            "quantiles": {k: json_float(v) for k, v in d.quantiles.items()},
        },
    }


class _Batch:
    """Rows waiting to be written: scalars as (key, step, value, flag), the rest as dicts."""

    def __init__(self) -> None:
        self.points: list[tuple[str, int, float | None, int]] = []
        self.etas: list[dict[str, Any]] = []
        self.dists: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.points) + len(self.etas) + len(self.dists)

    def extend(self, other: _Batch) -> None:
        self.points.extend(other.points)
        self.etas.extend(other.etas)
        self.dists.extend(other.dists)


class SqlSink:
    def __init__(
        self,
        engine: Engine,
        run_id: int,
        *,
        flush_seconds: float = 1.0,
        flush_points: int = 20_000,
        outage_seconds: float = 0.0,
    ) -> None:
        self.engine = engine
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self.flush_points = flush_points
        self.outage_seconds = outage_seconds  # retry transient DB errors this long per write
        self.flushes = 0  # committed batches, for tests and logs
        self.timer_error: BaseException | None = None  # the last failed timed write
        self._batch = _Batch()
        self._series: dict[str, int] = {}  # key -> series id, filled only after a commit
        # Two locks: appends hold _buffer only for a list append, so a timed write in
        # progress never stalls training; _write serialises writers, so flush() returns only
        # once every row appended before it is committed (checkpoints rely on that).
        self._buffer = threading.Lock()
        self._write = threading.Lock()
        self._last_flush = time.monotonic()
        self._closed = threading.Event()
        self._wake = threading.Event()  # a full batch is waiting: write it now
        self._timer = threading.Thread(target=self._tick, name=f"sql-sink-{run_id}", daemon=True)
        self._timer.start()

    # -- the MetricSink protocol ------------------------------------------------------------

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        rows = [(key, step, *encode_value(float(v))) for key, v in values.items()]
        with self._buffer:
            self._batch.points.extend(rows)
        self._maybe_flush()

    def eta_records(self, step: int, probe: str, records: Sequence[EtaRecord]) -> None:
        rows = [
            {"run_id": self.run_id, "probe": probe, "step": step, "multiplier": r.multiplier,
             "eta": r.eta, "loss": float(r.loss), "grad_dist": float(r.grad_dist)}
            for r in records
        ]
        with self._buffer:
            self._batch.etas.extend(rows)
        self._maybe_flush()

    def distributions(self, step: int, records: Sequence[Distribution]) -> None:
        rows = [distribution_row(self.run_id, step, d) for d in records]
        with self._buffer:
            self._batch.dists.extend(rows)
        self._maybe_flush()

    def flush(self) -> None:
        """Commit everything appended so far; raises if the database refuses it."""
        with self._write:
            with self._buffer:
                batch, self._batch = self._batch, _Batch()
            try:
                with_retries(lambda: self._store(batch), deadline_s=self.outage_seconds,
                             what=f"run {self.run_id}: metric write")
            except BaseException:
                with self._buffer:  # keep the rows, in order, for the next attempt
                    batch.extend(self._batch)
                    self._batch = batch
                raise
            self._last_flush = time.monotonic()

    def close(self) -> None:
        """Stop the timer and write what is left."""
        self._closed.set()
        self._wake.set()
        if self._timer is not threading.current_thread():
            self._timer.join(timeout=max(5.0, 2 * self.flush_seconds))
        self.flush()

    def pending(self) -> int:
        with self._buffer:
            return len(self._batch)

    # -- internals --------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        n = self.pending()
        if n >= 2 * self.flush_points:
            self.flush()  # the writer is a whole batch behind: write here, training waits
        elif n >= self.flush_points:
            self._wake.set()

    def _tick(self) -> None:
        # Wake often enough that no row waits much longer than flush_seconds, and at once
        # when a full batch is waiting.
        period = min(self.flush_seconds, 0.25)
        while True:
            self._wake.wait(period)
            self._wake.clear()
            if self._closed.is_set():
                return
            n = self.pending()
            full = n >= self.flush_points
            if not n or (not full and time.monotonic() - self._last_flush < self.flush_seconds):
                continue
            try:
                self.flush()
                self.timer_error = None
            except Exception as exc:  # the DB may be back at the next tick; close() re-raises
                self.timer_error = exc
                log.warning("run %s: timed metric flush failed: %s", self.run_id, exc)

    def _store(self, batch: _Batch) -> None:
        if not len(batch):
            return
        with self.engine.begin() as conn:
            ids = dict(self._series)
            missing = {key for key, *_ in batch.points if key not in ids}
            if missing:
                ids.update(series_ids(conn, self.run_id, missing))
            insert_points(conn, [(ids[key], step, v, flag) for key, step, v, flag in batch.points])
            insert_probe_records(conn, batch.etas)
            insert_distributions(conn, batch.dists)
        # Only now: ids created in a transaction that rolled back would not exist.
        self._series = ids
        self.flushes += 1
