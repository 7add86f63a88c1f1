"""CSV export of a run's scalar metrics, streamed: rows leave in chunks as the database
yields them, so a run of millions of points never sits in memory.

Columns run_id,key,step,value; values in full precision (repr), non-finite ones as nan, inf
and -inf: the same form as the CLI's scalars.csv, which numpy, pandas and spreadsheets read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from sqlalchemy import Engine, select

from server.db.metrics import run_keys
from server.db.models import Point, decode_value

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
