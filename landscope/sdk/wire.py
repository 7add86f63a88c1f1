"""The ingest wire format (contract 13, POST /runs/{id}/ingest), built off the training thread.

A Batch gathers what the training loop handed over (scalars by key as columns, eta records,
histograms) and encodes it once: JSON with non-finite floats as the strings "NaN", "Infinity"
and "-Infinity" (docs/api.md's JSON form: plain JSON has no such numbers), gzipped.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from worker.engine.sink import Distribution, EtaRecord

GZIP_LEVEL = 1  # the sender shares the machine with the loop: the cheapest level


def json_float(x: float) -> float | str:
    x = float(x)
    if math.isfinite(x):
        return x
    return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")


def from_json_float(x: float | int | str) -> float:
    """Inverse of json_float; also reads FileSink's 'nan'/'inf'/'-inf'."""
    return float(x)  # float() reads "NaN", "Infinity", "-Infinity", "nan", "inf" alike


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return json_float(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def as_float(v: Any) -> float:
    """A logged value as a float: Python numbers, numpy scalars, one-element tensors."""
    return float(v.item()) if hasattr(v, "item") else float(v)


class Batch:
    """One request's worth of records. `points` counts scalar points, eta records and
    histograms, the unit batches are cut by.

    Scalars are kept as rows grouped by their tuple of keys (a loop logs the same keys step
    after step), so that a group's steps are encoded once for all its keys and its columns
    come out of one zip: the sender shares the GIL with the training loop, and this is most
    of its work."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, ...], tuple[list[int], list[tuple]]] = {}
        self.etas: list[dict[str, Any]] = []
        self.dists: list[dict[str, Any]] = []
        self.points = 0

    def __bool__(self) -> bool:
        return self.points > 0

    def add_row(self, step: int, keys: tuple[str, ...], values: tuple) -> None:
        g = self.groups.get(keys)
        if g is None:
            g = self.groups[keys] = ([], [])
        g[0].append(step)
        g[1].append(values)
        self.points += len(keys)

    def add_scalars(self, step: int, values: Mapping[str, Any]) -> None:
        self.add_row(step, tuple(values), tuple(values.values()))

    def add_etas(self, step: int, probe: str, records: Sequence[EtaRecord]) -> None:
        self.etas.append({"step": step, "probe": probe, "records": [
            {"multiplier": json_float(r.multiplier), "eta": json_float(r.eta),
             "loss": json_float(r.loss), "grad_dist": json_float(r.grad_dist)}
            for r in records]})
        self.points += len(records)

    def add_dists(self, step: int, records: Iterable[Distribution]) -> None:
        for r in records:
            self.dists.append(_jsonable({"step": step, **asdict(r)}))
            self.points += 1

    @property
    def last_step(self) -> int | None:
        return max((g[0][-1] for g in self.groups.values()), default=None)

    @property
    def last_loss(self) -> float | None:
        """The loss logged at the latest step that has one (what a heartbeat reports)."""
        best: tuple[int, Any] | None = None
        for keys, (steps, rows) in self.groups.items():
            for lk in LOSS_KEYS:
                if lk in keys:
                    i = keys.index(lk)
                    if best is None or steps[-1] > best[0]:
                        best = (steps[-1], rows[-1][i])
                    break
        return None if best is None else as_float(best[1])

    def _columns(self) -> Iterator[tuple[str, str, str]]:
        """(key JSON, steps JSON, values JSON) per column."""
        entries = sum(len(k) for k in self.groups)
        groups: Iterable = self.groups.items()
        if entries > MAX_COLUMNS:  # many key sets: one column per key (the server's limit)
            merged: dict[str, tuple[list[int], list[Any]]] = {}
            for keys, (steps, rows) in self.groups.items():
                for key, col in zip(keys, zip(*rows, strict=True), strict=True):
                    m = merged.setdefault(key, ([], []))
                    m[0].extend(steps)
                    m[1].extend(col)
            groups = (((k,), (s, [(v,) for v in vs])) for k, (s, vs) in merged.items())
        dumps = json.dumps
        for keys, (steps, rows) in groups:
            steps_json = dumps(steps)
            for key, col in zip(keys, zip(*rows, strict=True), strict=True):
                if not _PLAIN.issuperset(map(type, col)):
                    col = [as_float(v) for v in col]  # tensors, numpy scalars
                vals = dumps(col)  # NaN/Infinity as bare words: only numbers, so only there
                if "N" in vals or "I" in vals:
                    vals = _WORDS.sub(r'"\g<0>"', vals)
                yield dumps(key), steps_json, vals

    def encode(self) -> bytes:
        """The gzipped request body, exactly what the spool keeps and the server receives."""
        parts = []
        cols = [f'{{"key":{k},"steps":{s},"values":{v}}}' for k, s, v in self._columns()]
        if cols:
            parts.append('"scalars":[' + ",".join(cols) + "]")
        if self.etas:
            parts.append('"etas":' + json.dumps(self.etas, allow_nan=False))
        if self.dists:
            parts.append('"distributions":' + json.dumps(self.dists, allow_nan=False))
        raw = ("{" + ",".join(parts) + "}").encode()
        return gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0)


MAX_COLUMNS = 5_000  # scalar columns in one body; the server takes 10,000
_PLAIN = frozenset((float, int))
_WORDS = re.compile(r"-?Infinity|NaN")


LOSS_KEYS = ("train/loss", "loss")  # what a heartbeat reports as last_loss, in this order


def decode(gzipped: bytes) -> dict[str, Any]:
    """A spooled body back as JSON (for tests and `landscope sync` progress counts)."""
    return json.loads(gzip.decompress(gzipped))
