"""Export of a run's scalar metrics, streamed: rows leave in chunks as the database yields
them, so a run of millions of points never sits in memory.

CSV: columns run_id,key,step,value; values in full precision (repr), non-finite ones as nan,
inf and -inf: the same form as the CLI's scalars.csv, which numpy, pandas and spreadsheets
read. JSON: the run itself first (RunOut: its spec and the environment it trained under, the
threads, precision, machine and versions its numbers depend on), then every series as
[step, value] pairs, non-finite values as "NaN", "Infinity", "-Infinity".
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, select

from server.db.metrics import run_keys
from server.db.models import Point, decode_value
from server.schemas import json_float

HEADER = ("run_id", "key", "step", "value")


def iter_csv(engine: Engine, run_id: int, chunk_rows: int = 20_000) -> Iterator[str]:
    """CSV text in chunks of about `chunk_rows` rows, keys in order, steps ascending.

    It opens its own connection: the response streams after the request's session is gone.
    One series at a time, each read along the (series_id, step) primary key, so the database
    streams without sorting; stream_results makes PostgreSQL use a server-side cursor."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HEADER)
    rows = 0
    with engine.connect() as conn:
        conn = conn.execution_options(stream_results=True, yield_per=chunk_rows)
        for key, sid in sorted(run_keys(conn, run_id).items()):
            stmt = (
                select(Point.step, Point.value, Point.flag)
                .where(Point.series_id == sid)
                .order_by(Point.step)
            )
            for part in conn.execute(stmt).partitions():
                writer.writerows(
                    (run_id, key, step, repr(decode_value(value, flag)))
                    for step, value, flag in part
                )
                rows += len(part)
                if rows >= chunk_rows:
                    yield _drain(buf)
                    rows = 0
    tail = _drain(buf)
    if tail:
        yield tail


def _drain(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text


def iter_json(engine: Engine, run_id: int, run: dict[str, Any], chunk_rows: int = 20_000
              ) -> Iterator[str]:
    """{"run": <run>, "series": {key: [[step, value], ...], ...}} in chunks of about
    `chunk_rows` points, keys in order, steps ascending (read as iter_csv reads them).
    The run is serialised now, before the first byte goes out."""
    head = json.dumps({"run": _finite(run)}, separators=(",", ":"), allow_nan=False)
    return _stream_json(engine, run_id, head, chunk_rows)


def _finite(value: Any) -> Any:
    """Non-finite floats anywhere in `value` as the API's strings (strict JSON)."""
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _stream_json(engine: Engine, run_id: int, head: str, chunk_rows: int) -> Iterator[str]:
    parts = [head[:-1], ',"series":{']
    rows = 0
    with engine.connect() as conn:
        conn = conn.execution_options(stream_results=True, yield_per=chunk_rows)
        for i, (key, sid) in enumerate(sorted(run_keys(conn, run_id).items())):
            parts.append(("," if i else "") + json.dumps(key) + ":[")
            first = True
            stmt = (
                select(Point.step, Point.value, Point.flag)
                .where(Point.series_id == sid)
                .order_by(Point.step)
            )
            for part in conn.execute(stmt).partitions():
                body = ",".join(
                    json.dumps([step, json_float(decode_value(value, flag))])
                    for step, value, flag in part
                )
                parts.append(body if first else "," + body)
                first = False
                rows += len(part)
                if rows >= chunk_rows:
                    yield "".join(parts)
                    parts, rows = [], 0
            parts.append("]")
    parts.append("}}")
    yield "".join(parts)
