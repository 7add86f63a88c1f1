"""An SDK metric batch: from the request's bytes to stored rows.

Checked by hand rather than by a pydantic model per point: a batch may carry a million
numbers, and a model per point costs more than storing them. Every check names the field
path of what it refuses, as FastAPI's own 422s do (["body", "scalars", 3, "values", 17]).
Non-finite numbers are data: "NaN", "Infinity", "-Infinity" (the JSON spelling; Python's
NaN/Infinity literals too) reach the database as such. Scalars come as JSON columns (old
SDKs) or binary blocks (server/services/ingest_blocks.py), or both. Every write is
insert-ignore on the record's natural key, so a batch sent twice (a retry, a spool drained
again) changes nothing.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from server.db.metrics import insert_distributions, insert_probe_records, insert_series
from server.services.errors import InvalidRequest
from server.services.ingest_blocks import merge, parse_blocks
from server.services.sdk_runs import Heartbeat
from server.text import text_problem

INT32_MAX = 2**31 - 1  # steps, layers and counters are 4-byte integers on PostgreSQL
MAX_KEYS = 10_000  # scalar columns in one batch
MAX_KEY_CHARS = 200  # metric_series.key
MAX_PROBE_CHARS = 32  # probe_records.probe
MAX_RECORDS = 100_000  # eta records of one probe step, bins of one histogram
MAX_QUANTILES = 256
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
TOP = frozenset({"scalars", "blocks", "etas", "distributions", "heartbeat"})
ETA_FIELDS = ("multiplier", "eta", "loss", "grad_dist")
DIST_REQUIRED = ("step", "layer", "scope", "lo", "hi", "counts", "mean", "var")
DIST_FIELDS = frozenset((*DIST_REQUIRED, "unit", "underflow", "overflow", "nonfinite",
                         "quantiles"))


class BodyRejected(Exception):
    """The body cannot be read at all: `status` 400 (not JSON, bad gzip), 413 (too large once
    decompressed) or 415 (an encoding other than gzip)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Batch:
    # key -> (steps, values): lists from JSON columns, numpy arrays from binary blocks
    scalars: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    etas: list[dict[str, Any]] = field(default_factory=list)  # probe_records rows, no run_id
    distributions: list[dict[str, Any]] = field(default_factory=list)  # idem
    heartbeat: Heartbeat | None = None

    @property
    def points(self) -> int:
        return sum(len(steps) for steps, _ in self.scalars.values())


# -- bytes to JSON ----------------------------------------------------------------------------


def decode_body(body: bytes, encoding: str | None, max_bytes: int) -> Any:
    """The JSON value of a request body, gunzipped first when Content-Encoding says gzip.
    Decompression stops at `max_bytes`: a small bomb cannot fill the server's memory."""
    enc = (encoding or "identity").strip().lower()
    if enc == "gzip":
        body = _gunzip(body, max_bytes)
    elif enc != "identity":
        raise BodyRejected(415, f"Content-Encoding {encoding!r} is not supported; send gzip "
                           "or nothing")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BodyRejected(400, f"the body is not JSON: {exc}") from None


def _gunzip(body: bytes, max_bytes: int) -> bytes:
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BodyRejected(400, f"the body is not valid gzip: {exc}") from None
    if len(out) > max_bytes:
        raise BodyRejected(413, f"the body is over the server's limit of {max_bytes} bytes "
                           "once decompressed (LANDSCOPE_MAX_INGEST_MB)")
    if not d.eof or d.unused_data:
        raise BodyRejected(400, "the body is not valid gzip: truncated, or data after its end")
    return out


# -- JSON to a batch --------------------------------------------------------------------------


def parse_batch(data: Any) -> Batch:
    loc: tuple = ("body",)
    obj = _object(data, loc, TOP)
    batch = Batch()
    columns = _list(obj.get("scalars", []), (*loc, "scalars"), MAX_KEYS)
    for i, col in enumerate(columns):
        _scalar_column(col, (*loc, "scalars", i), batch.scalars)
    if "blocks" in obj:
        parse_blocks(_list(obj["blocks"], (*loc, "blocks"), MAX_KEYS), (*loc, "blocks"),
                     batch.scalars, max_keys=MAX_KEYS - len(columns), check_key=_key)
    for i, e in enumerate(_list(obj.get("etas", []), (*loc, "etas"))):
        _eta_batch(e, (*loc, "etas", i), batch.etas)
    for i, d in enumerate(_list(obj.get("distributions", []), (*loc, "distributions"))):
        batch.distributions.append(_distribution(d, (*loc, "distributions", i)))
    if (hb := obj.get("heartbeat")) is not None:
        hb = _object(hb, (*loc, "heartbeat"), frozenset({"step", "last_loss"}))
        step = hb.get("step")
        loss = hb.get("last_loss")
        batch.heartbeat = Heartbeat(
            # the last step trained; runs.step stores one more (steps done): one below the top
            None if step is None else _int(step, (*loc, "heartbeat", "step"), INT32_MAX - 1),
            None if loss is None else _float(loss, (*loc, "heartbeat", "last_loss")))
    return batch


def _scalar_column(col: Any, loc: tuple, out: dict) -> None:
    col = _object(col, loc, frozenset({"key", "steps", "values"}), ("key", "steps", "values"))
    key = _key(col["key"], (*loc, "key"))
    steps = _list(col["steps"], (*loc, "steps"), None)
    values = _list(col["values"], (*loc, "values"), None)
    if len(steps) != len(values):
        raise InvalidRequest((*loc, "values"), f"{len(values)} values for {len(steps)} steps: "
                             "one value per step", "ragged")
    for i, s in enumerate(steps):
        if type(s) is not int or not 0 <= s <= INT32_MAX:  # noqa: E721 - bool is no step
            raise InvalidRequest((*loc, "steps", i), f"a step is an integer in [0, {INT32_MAX}]",
                                 "step")
    for i, v in enumerate(values):  # in place: the parsed list becomes the float column
        t = type(v)
        if t is float:
            continue
        values[i] = _float(v, (*loc, "values", i))
    merge(out, key, steps, values)  # the same key twice in one batch: one column


def _key(v: Any, loc: tuple) -> str:
    return _text(v, loc, MAX_KEY_CHARS)


def _eta_batch(e: Any, loc: tuple, out: list) -> None:
    e = _object(e, loc, frozenset({"step", "probe", "records"}), ("step", "probe", "records"))
    step = _int(e["step"], (*loc, "step"))
    probe = _text(e["probe"], (*loc, "probe"), MAX_PROBE_CHARS)
    for i, r in enumerate(_list(e["records"], (*loc, "records"), MAX_RECORDS)):
        where = (*loc, "records", i)
        r = _object(r, where, frozenset(ETA_FIELDS), ETA_FIELDS)
        out.append({
            "probe": probe, "step": step,
            # Part of the key (multiplier) or a plain float column (eta): finite only.
            "multiplier": _float(r["multiplier"], (*where, "multiplier"), finite=True),
            "eta": _float(r["eta"], (*where, "eta"), finite=True),
            "loss": _float(r["loss"], (*where, "loss")),
            "grad_dist": _float(r["grad_dist"], (*where, "grad_dist")),
        })


def _distribution(d: Any, loc: tuple) -> dict[str, Any]:
    d = _object(d, loc, DIST_FIELDS, DIST_REQUIRED)
    scope = d["scope"]
    if scope not in ("layer", "unit"):
        raise InvalidRequest((*loc, "scope"), "'layer' or 'unit'", "enum")
    unit = d.get("unit")
    counts = _list(d["counts"], (*loc, "counts"), MAX_RECORDS)
    quantiles = _object(d.get("quantiles", {}), (*loc, "quantiles"), None)
    if len(quantiles) > MAX_QUANTILES:
        raise InvalidRequest((*loc, "quantiles"), f"at most {MAX_QUANTILES} quantiles",
                             "too_long")
    lo = _float(d["lo"], (*loc, "lo"), finite=True)
    hi = _float(d["hi"], (*loc, "hi"), finite=True)
    if not lo < hi:
        raise InvalidRequest((*loc, "hi"), "hi must be greater than lo", "value_error")
    return {
        "layer": _int(d["layer"], (*loc, "layer")), "scope": scope,
        "step": _int(d["step"], (*loc, "step")),
        "unit": None if unit is None else _int(unit, (*loc, "unit")),
        "lo": lo, "hi": hi,
        "counts": [_int(c, (*loc, "counts", i), 2**53) for i, c in enumerate(counts)],
        **{k: _int(d.get(k, 0), (*loc, k)) for k in ("underflow", "overflow", "nonfinite")},
        # JSON-safe, as the worker's SqlSink stores them (server/db/models.py).
        "stats": {
            "mean": _json_float(_float(d["mean"], (*loc, "mean"))),
            "var": _json_float(_float(d["var"], (*loc, "var"))),
            "quantiles": {_text(k, (*loc, "quantiles", k), 32):
                          _json_float(_float(v, (*loc, "quantiles", k)))
                          for k, v in quantiles.items()},
        },
    }


# -- the checks -------------------------------------------------------------------------------


def _object(v: Any, loc: tuple, allowed: frozenset | None,
            required: tuple[str, ...] = ()) -> dict:
    if not isinstance(v, dict):
        raise InvalidRequest(loc, "an object", "dict_type")
    if allowed is not None and (
            extra := next((k for k in v if k not in allowed), None)) is not None:
        raise InvalidRequest((*loc, extra), "unknown field; expected one of "
                             + ", ".join(sorted(allowed)), "extra_forbidden")
    for k in required:
        if k not in v:
            raise InvalidRequest((*loc, k), "field required", "missing")
    return v


def _list(v: Any, loc: tuple, most: int | None = None) -> list:
    if not isinstance(v, list):
        raise InvalidRequest(loc, "an array", "list_type")
    if most is not None and len(v) > most:
        raise InvalidRequest(loc, f"at most {most} entries, not {len(v)}", "too_long")
    return v


def _text(v: Any, loc: tuple, most: int) -> str:
    if not isinstance(v, str) or not v:
        raise InvalidRequest(loc, "a non-empty string", "string_type")
    if len(v) > most:
        raise InvalidRequest(loc, f"at most {most} characters", "string_too_long")
    if problem := text_problem(v):
        raise InvalidRequest(loc, problem, "string_unstorable")
    return v


def _int(v: Any, loc: tuple, most: int = INT32_MAX) -> int:
    if type(v) is not int or not 0 <= v <= most:  # noqa: E721 - bool is no count
        raise InvalidRequest(loc, f"an integer in [0, {most}]", "int_range")
    return v


def _float(v: Any, loc: tuple, *, finite: bool = False) -> float:
    """A number, or one of the strings "NaN", "Infinity", "-Infinity" (unless `finite`)."""
    t = type(v)
    if t is float:
        x = v
    elif t is int:
        try:
            x = float(v)
        except OverflowError:
            raise InvalidRequest(loc, "too large for a float", "float_range") from None
    elif t is str and v in NONFINITE:
        x = NONFINITE[v]
    else:
        raise InvalidRequest(loc, 'a number, or "NaN", "Infinity" or "-Infinity"',
                             "float_type")
    if finite and not math.isfinite(x):
        raise InvalidRequest(loc, "a finite number", "finite_number")
    return x


def _json_float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


# -- storing ----------------------------------------------------------------------------------


def store(session: Session, run_id: int, batch: Batch) -> None:
    """Insert-ignore every record of the batch (not committed)."""
    conn = session.connection()
    if batch.scalars:
        insert_series(conn, run_id, batch.scalars)
    insert_probe_records(conn, [{"run_id": run_id, **r} for r in batch.etas])
    insert_distributions(conn, [{"run_id": run_id, **r} for r in batch.distributions])
