"""GET /groups/metrics: several groups of runs, each drawn as one line with a band.

The request's groups and keys are resolved here (ids checked, keys selected as /metrics
selects them); server/db/grouped.py reads every group and key in one statement."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.grouped import GroupedSeries, read_grouped
from server.db.metrics import series_spans
from server.db.models import Series
from server.schemas import json_float
from server.schemas_groups import GroupedMetricsOut, GroupMetricsOut, GroupSeriesOut
from server.services.errors import InvalidRequest
from server.services.groups import parse_ids, require_runs
from server.services.metrics import select_keys

MAX_GROUPS = 64
MAX_RUNS = 256  # distinct runs in one request, all groups together
# groups x keys x max_points: the most buckets one request may ask for (each is a row of the
# statement's result and six numbers of the answer).
MAX_CELLS = 500_000


def parse_groups(groups: Sequence[str]) -> list[list[int]]:
    if not groups:
        raise InvalidRequest(("query", "group"), "give at least one group (group=1,2,3)")
    if len(groups) > MAX_GROUPS:
        raise InvalidRequest(("query", "group"),
                             f"{len(groups)} groups; at most {MAX_GROUPS} per request")
    out = [parse_ids(text, ("query", "group", i), MAX_RUNS) for i, text in enumerate(groups)]
    distinct = {i for ids in out for i in ids}
    if len(distinct) > MAX_RUNS:
        raise InvalidRequest(("query", "group"),
                             f"{len(distinct)} runs; at most {MAX_RUNS} per request")
    return out


def grouped_metrics(
    session: Session,
    groups: Sequence[str],
    keys: str | None,
    *,
    center: str = "median",
    band: str = "minmax",
    max_points: int = 300,
    since_step: int | None = None,
    until_step: int | None = None,
) -> GroupedMetricsOut:
    run_groups = parse_groups(groups)
    run_ids = sorted({i for ids in run_groups for i in ids})
    require_runs(session, run_ids)
    conn = session.connection()
    sids: dict[tuple[int, str], int] = {
        (run_id, key): sid for run_id, key, sid in conn.execute(
            select(Series.run_id, Series.key, Series.id).where(Series.run_id.in_(run_ids)))}
    wanted = list(select_keys({key: 0 for _, key in sids}, keys))
    cells = len(run_groups) * len(wanted) * max_points
    if cells > MAX_CELLS:
        raise InvalidRequest(
            ("query", "keys"),
            f"{len(run_groups)} groups x {len(wanted)} keys x {max_points} points is over "
            f"{MAX_CELLS:,} buckets; ask for fewer keys, groups or max_points")
    per_group = [{key: [sids[r, key] for r in ids if (r, key) in sids] for key in wanted}
                 for ids in run_groups]
    used = sorted({sid for g in per_group for ids in g.values() for sid in ids})
    spans = [s for s in series_spans(conn, used, since_step=since_step,
                                     until_step=until_step).values() if s is not None]
    if spans:
        read = read_grouped(
            conn, per_group, (min(a for a, _ in spans), max(b for _, b in spans)),
            since_step=since_step, until_step=until_step, max_points=max_points,
            center=center, band=band)
    else:
        read = [{key: GroupedSeries(key) for key in wanted} for _ in run_groups]
    return GroupedMetricsOut(groups=[
        GroupMetricsOut(run_ids=ids, series=[_series_out(data[key]) for key in wanted])
        for ids, data in zip(run_groups, read, strict=True)])


def _series_out(data: GroupedSeries) -> GroupSeriesOut:
    return GroupSeriesOut(
        key=data.key, steps=data.steps, center=[json_float(v) for v in data.center],
        lo=[json_float(v) for v in data.lo], hi=[json_float(v) for v in data.hi],
        n=data.n, nonfinite=data.nonfinite)
