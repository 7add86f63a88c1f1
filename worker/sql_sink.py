"""SqlSink: the engine's metrics into the database, in batches, readable while the run trains.

The training thread only appends what it is handed (the step and the mapping, the records) to
an in-memory buffer: the rows are built by the writer thread (columns per key for
server.db.metrics.insert_series, dicts for probe records and distributions): issue 13's profile
put that at 13 % of a write, paid by the training thread until then. A daemon writer thread commits
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

import numpy as np
from sqlalchemy import Engine

from server.db.metrics import insert_distributions, insert_probe_records, insert_series
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
    """What waits to be written, as the engine handed it; len() counts the rows it makes."""

    def __init__(self) -> None:
        self.scalars: list[tuple[int, Mapping[str, float]]] = []
        self.etas: list[tuple[int, str, Sequence[EtaRecord]]] = []
        self.dists: list[tuple[int, Sequence[Distribution]]] = []
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def extend(self, other: _Batch) -> None:
        self.scalars.extend(other.scalars)
        self.etas.extend(other.etas)
        self.dists.extend(other.dists)
        self.rows += other.rows

    def columns(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Scalars as insert_series takes them: per key, its steps and raw values.

        A loop logs the same keys step after step: each run of steps with one key tuple
        becomes a (steps x keys) array filled by np.fromiter, twice as fast as appending
        point by point to per-key lists."""
        chunks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        i, entries = 0, self.scalars
        while i < len(entries):
            keys = tuple(entries[i][1])
            j = i + 1
            while j < len(entries) and tuple(entries[j][1]) == keys:
                j += 1
            run = entries[i:j]
            steps = np.fromiter((s for s, _ in run), np.int64, count=len(run))
            values = np.fromiter((v for _, d in run for v in d.values()), np.float64,
                                 count=len(run) * len(keys)).reshape(len(run), len(keys))
            for k, key in enumerate(keys):
                chunks.setdefault(key, []).append((steps, values[:, k]))
            i = j
        return {key: (np.concatenate([s for s, _ in parts]),
                      np.concatenate([v for _, v in parts])) for key, parts in chunks.items()}

    def eta_rows(self, run_id: int) -> list[dict[str, Any]]:
        return [
            {"run_id": run_id, "probe": probe, "step": step, "multiplier": r.multiplier,
             "eta": r.eta, "loss": float(r.loss), "grad_dist": float(r.grad_dist)}
            for step, probe, records in self.etas for r in records
        ]

    def dist_rows(self, run_id: int) -> list[dict[str, Any]]:
        return [distribution_row(run_id, step, d) for step, records in self.dists
                for d in records]


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

    # The copies (dict(), list()) are all the training thread pays: a caller may reuse its
    # mapping for the next step.

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        values = dict(values)
        with self._buffer:
            self._batch.scalars.append((step, values))
            self._batch.rows += len(values)
        self._maybe_flush()

    def eta_records(self, step: int, probe: str, records: Sequence[EtaRecord]) -> None:
        records = list(records)
        with self._buffer:
            self._batch.etas.append((step, probe, records))
            self._batch.rows += len(records)
        self._maybe_flush()

    def distributions(self, step: int, records: Sequence[Distribution]) -> None:
        records = list(records)
        with self._buffer:
            self._batch.dists.append((step, records))
            self._batch.rows += len(records)
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
        # Built here, on the writer thread (or by flush()): never inside scalars().
        columns = batch.columns()
        etas, dists = batch.eta_rows(self.run_id), batch.dist_rows(self.run_id)
        with self.engine.begin() as conn:
            insert_series(conn, self.run_id, columns)
            insert_probe_records(conn, etas)
            insert_distributions(conn, dists)
        self.flushes += 1
