"""The ingest wire format (POST /runs/{id}/ingest, docs/api.md), built off the training thread.

A Batch gathers what the training loop handed over (rows of scalars grouped by their tuple of
keys, eta records, histograms) and encodes it once, gzipped JSON. Scalars go as binary blocks
(format 1, docs/api.md "Binary scalar blocks"): per set of keys logged together, the steps as
little-endian int32 and the values as a little-endian float64 matrix (one row per step),
each base64 text. numpy builds them from the rows in one C call and base64/gzip are C too:
the sender shares the GIL with the training loop, and the old per-value JSON text (kept on
the server for old SDKs) cost it ten times more. NaN and infinities are plain float64 there;
etas and histograms (rare) stay JSON with non-finite floats as "NaN", "Infinity",
"-Infinity".
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from itertools import chain
from typing import Any

import numpy as np

from worker.engine.sink import Distribution, EtaRecord

GZIP_LEVEL = 1  # the sender shares the machine with the loop: the cheapest level
BLOCK_FORMAT = 1  # the "v" of a scalar block (server/services/ingest_blocks.py reads it)
STEP_DTYPE = "<i4"  # steps are int4 on the server
VALUE_DTYPE = "<f8"


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
    """A logged value as a float: Python numbers, numpy scalars, one-element tensors; an int
    too large for a float is an infinity (non-finite values are data)."""
    try:
        return float(v.item()) if hasattr(v, "item") else float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _matrix(rows: list[tuple], width: int) -> np.ndarray:
    """Rows of values as an (n, width) float64 matrix: one C loop over floats and ints (and
    tensors, by their __float__); value by value where it stops (an int beyond float64 is
    +-inf, as as_float makes it)."""
    n = len(rows)
    try:
        m = np.fromiter(chain.from_iterable(rows), dtype=VALUE_DTYPE, count=n * width)
    except Exception:  # noqa: BLE001 - whatever numpy refuses, as_float reads
        m = np.array([tuple(map(as_float, r)) for r in rows], dtype=VALUE_DTYPE)
    return m.reshape(n, width)


def _b64(arr: np.ndarray) -> str:
    return binascii.b2a_base64(arr.tobytes(), newline=False).decode("ascii")


def block(keys: Sequence[str], steps: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    """One binary scalar block (format 1): `values` is (len(steps), len(keys))."""
    return {"v": BLOCK_FORMAT, "keys": list(keys), "n": len(steps),
            "step_dtype": STEP_DTYPE, "steps": _b64(steps.astype(STEP_DTYPE, copy=False)),
            "value_dtype": VALUE_DTYPE, "values": _b64(values.astype(VALUE_DTYPE, copy=False))}


def block_json(keys: Sequence[str], steps: np.ndarray, values: np.ndarray) -> str:
    """block() as JSON text, the base64 put in as it is: json.dumps would escape-check it
    character by character (a quarter of the sender's time)."""
    return (f'{{"v":{BLOCK_FORMAT},"keys":{json.dumps(list(keys))},"n":{len(steps)},'
            f'"step_dtype":"{STEP_DTYPE}","steps":"{_b64(steps.astype(STEP_DTYPE))}",'
            f'"value_dtype":"{VALUE_DTYPE}","values":"{_b64(values.astype(VALUE_DTYPE))}"}}')


def read_block(b: Mapping[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    """key -> (steps, values) of a block (for tests and `landscope sync` progress counts)."""
    steps = np.frombuffer(base64.b64decode(b["steps"]), b["step_dtype"])
    values = np.frombuffer(base64.b64decode(b["values"]), b["value_dtype"])
    values = values.reshape(len(steps), len(b["keys"]))
    return {k: (steps.tolist(), values[:, j].tolist()) for j, k in enumerate(b["keys"])}


class Batch:
    """One request's worth of records. `points` counts scalar points, eta records and
    histograms, the unit batches are cut by.

    Scalars are kept as rows grouped by their tuple of keys (a loop logs the same keys step
    after step): each group becomes one block, its steps encoded once for all its keys and
    its values one matrix; tensors (run.log detached them) are converted here, off the
    training thread."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, ...], list] = {}  # keys -> [steps, rows]
        self.etas: list[dict[str, Any]] = []
        self.dists: list[dict[str, Any]] = []
        self.points = 0

    def __bool__(self) -> bool:
        return self.points > 0

    def add_row(self, step: int, keys: tuple[str, ...], values: tuple) -> None:
        self._group(keys)
        g = self.groups[keys]
        g[0].append(step)
        g[1].append(values)
        self.points += len(keys)

    def add_rows(self, items: Sequence[tuple]) -> None:
        """(step, keys, values) rows, as run.log queued them: a loop logs the same keys step
        after step, so most cuts are one group, added with C-level calls only."""
        if not items:
            return
        steps, keyss, rows = zip(*items, strict=True)
        keys = keyss[0]
        if keyss.count(keys) != len(keyss):  # several sets of keys: row by row
            for step, k, values in items:
                self.add_row(step, k, values)
            return
        g = self._group(keys)
        g[0].extend(steps)
        g[1].extend(rows)
        self.points += len(keys) * len(rows)

    def _group(self, keys: tuple[str, ...]) -> list:
        g = self.groups.get(keys)
        if g is None:
            g = self.groups[keys] = [[], []]
        return g

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

    def _mats(self) -> list[tuple[tuple[str, ...], np.ndarray, np.ndarray]]:
        """(keys, steps, values) per block: one per set of keys, or (many sets, past the
        server's limit on keys in one body) one per key."""
        mats = [(keys, np.asarray(steps, dtype=np.int64), _matrix(rows, len(keys)))
                for keys, (steps, rows) in self.groups.items() if keys]
        if sum(len(k) for k, _, _ in mats) > MAX_COLUMNS:
            merged: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
            for keys, steps, values in mats:
                for j, key in enumerate(keys):
                    m = merged.setdefault(key, ([], []))
                    m[0].append(steps)
                    m[1].append(values[:, j])
            mats = [((k,), np.concatenate(st), np.concatenate(vs)[:, None])
                    for k, (st, vs) in merged.items()]
        return mats

    def blocks(self) -> list[dict[str, Any]]:
        return [block(*m) for m in self._mats()]

    def encode(self) -> bytes:
        """The gzipped request body, exactly what the spool keeps and the server receives."""
        parts = []
        if self.groups:
            parts.append('"blocks":[' + ",".join(block_json(*m) for m in self._mats()) + "]")
        if self.etas:
            parts.append('"etas":' + json.dumps(self.etas, allow_nan=False))
        if self.dists:
            parts.append('"distributions":' + json.dumps(self.dists, allow_nan=False))
        raw = ("{" + ",".join(parts) + "}").encode()
        # zlib releases the GIL while it compresses (gzip.compress with mtime=0 is one
        # zlib.compress call): the training thread runs meanwhile.
        return gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0)


MAX_COLUMNS = 5_000  # keys in one body's blocks; the server takes 10,000
LOSS_KEYS = ("train/loss", "loss")  # what a heartbeat reports as last_loss, in this order


def decode(gzipped: bytes) -> dict[str, Any]:
    """A spooled body back as JSON (for tests and `landscope sync` progress counts)."""
    return json.loads(gzip.decompress(gzipped))


def scalars_of(body: Mapping[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """key -> [(step, value)] over a decoded body's blocks and JSON columns, in body order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for b in body.get("blocks", []):
        for key, (steps, values) in read_block(b).items():
            out.setdefault(key, []).extend(zip(steps, values, strict=True))
    for c in body.get("scalars", []):
        out.setdefault(c["key"], []).extend(
            zip(c["steps"], map(from_json_float, c["values"]), strict=True))
    return out
