"""Reading a run's measurements: scalar series (downsampled in SQL), per-eta probe records and
activation histograms, with non-finite numbers in the API's string form (server/schemas.py)."""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from server.db.downsample import SeriesData, read_buckets_many
from server.db.metrics import (
    read_raw_many,
    run_keys,
    series_spans,
)
from server.db.models import DistributionRecord, ProbeRecord
from server.schemas import DistributionOut, ProbeRecordOut, SeriesOut, json_float
from server.services.runs import require_run

_GLOB = set("*?[")


def select_keys(available: dict[str, int], requested: str | None) -> dict[str, int | None]:
    """Comma-separated exact keys and globs ("landscape/*") -> {key: series id}.

    No request means every key. An exact key the run has not recorded yet maps to None (an
    empty series: a client polling a run that just started asks before the first point);
    a glob yields only keys that exist."""
    if not requested or not requested.strip():
        return dict(sorted(available.items()))
    out: dict[str, int | None] = {}
    for part in (p.strip() for p in requested.split(",")):
        if not part:
            continue
        if _GLOB & set(part):
            out.update((k, available[k]) for k in sorted(available) if fnmatchcase(k, part))
        else:
            out[part] = available.get(part)
    return out


def series_out(data: SeriesData) -> SeriesOut:
    if not data.buckets:
        return SeriesOut(
            key=data.key,
            downsampled=False,
            steps=data.steps,
            values=[json_float(v) for v in data.values],
        )
    # Bucket minima and maxima are over finite points only (finite or None); a mean of huge
    # finite values can still overflow to inf.
    return SeriesOut(
        key=data.key,
        downsampled=True,
        steps=data.steps,
        values=[json_float(v) for v in data.values],
        min=data.lo,
        max=data.hi,
        counts=data.counts,
        nonfinite=data.nonfinite,
    )


def read_metrics(
    session: Session,
    run_id: int,
    keys: str | None,
    *,
    since_step: int | None = None,
    until_step: int | None = None,
    max_points: int | None = None,
) -> dict[str, SeriesOut]:
    conn = session.connection()
    available = run_keys(conn, run_id)
    if not available:  # 404 for a run that does not exist, not an empty answer
        require_run(session, run_id)
    wanted = select_keys(available, keys)
    found = {key: sid for key, sid in wanted.items() if sid is not None}
    # A live poll asks for a second of new points of every key: one statement finds which
    # series need downsampling, one more reads all the others, and one more downsamples the
    # rest (a page's first read; read_series would cost three statements per key).
    if max_points is None:
        read = read_raw_many(conn, found, since_step=since_step, until_step=until_step)
    else:
        spans = series_spans(conn, list(found.values()), since_step=since_step,
                             until_step=until_step)

        def wide(sid: int) -> bool:
            span = spans[sid]
            return span is not None and span[1] - span[0] + 1 > max_points

        read = read_raw_many(conn, {k: sid for k, sid in found.items() if not wide(sid)},
                             since_step=since_step, until_step=until_step)
        read |= read_buckets_many(
            conn, {k: (sid, spans[sid]) for k, sid in found.items() if wide(sid)},
            since_step=since_step, until_step=until_step, max_points=max_points)
    return {key: series_out(read[key]) if key in read else
            SeriesOut(key=key, downsampled=False, steps=[], values=[]) for key in wanted}


def list_keys(session: Session, run_id: int) -> list[str]:
    require_run(session, run_id)
    return sorted(run_keys(session.connection(), run_id))


def probe_records(
    session: Session,
    run_id: int,
    *,
    probe: str | None = None,
    since_step: int | None = None,
    every: int | None = None,
    limit: int = 100_000,
) -> list[ProbeRecordOut]:
    """Every step size of every landscape probe (Fig 11 plots d(eta) per eta over steps).

    `every`: only steps that are multiples of it, plus every record with a non-finite loss or
    d(eta) wherever it is (a plot thinned to a readable number of lines still shows where the
    landscape blew up)."""
    require_run(session, run_id)
    stmt = select(ProbeRecord).where(ProbeRecord.run_id == run_id)
    if probe is not None:
        stmt = stmt.where(ProbeRecord.probe == probe)
    if since_step is not None:
        stmt = stmt.where(ProbeRecord.step >= since_step)
    if every is not None and every > 1:
        stmt = stmt.where(or_(ProbeRecord.step % every == 0,
                              _nonfinite(ProbeRecord.loss), _nonfinite(ProbeRecord.grad_dist)))
    stmt = stmt.order_by(ProbeRecord.step, ProbeRecord.probe, ProbeRecord.multiplier).limit(limit)
    return [
        ProbeRecordOut(
            probe=r.probe,
            step=r.step,
            multiplier=r.multiplier,
            eta=r.eta,
            loss=json_float(r.loss),
            grad_dist=json_float(r.grad_dist),
        )
        for r in session.scalars(stmt)
    ]


def _nonfinite(column):
    # NaN is stored as NULL on SQLite (models.Real); PostgreSQL orders NaN above +inf, so
    # abs() >= inf catches NaN and both infinities there, and the infinities on SQLite.
    return or_(column.is_(None), func.abs(column) >= math.inf)


def distributions(
    session: Session,
    run_id: int,
    *,
    layer: int | None = None,
    scope: str | None = None,
    since_step: int | None = None,
    limit: int = 10_000,
) -> list[DistributionOut]:
    """Activation histograms; `stats` is stored JSON-safe already (non-finite as strings)."""
    require_run(session, run_id)
    d = DistributionRecord
    stmt = select(d).where(d.run_id == run_id)
    if layer is not None:
        stmt = stmt.where(d.layer == layer)
    if scope is not None:
        stmt = stmt.where(d.scope == scope)
    if since_step is not None:
        stmt = stmt.where(d.step >= since_step)
    stmt = stmt.order_by(d.step, d.layer, d.scope).limit(limit)
    return [
        DistributionOut(
            layer=r.layer,
            scope=r.scope,
            step=r.step,
            unit=r.unit,
            lo=r.lo,
            hi=r.hi,
            counts=r.counts,
            underflow=r.underflow,
            overflow=r.overflow,
            nonfinite=r.nonfinite,
            stats=r.stats,
        )
        for r in session.scalars(stmt)
    ]
