"""Analysis rows to response bodies: the summary, the detail with its grids, and the CSV.

A grid is read in one query per analysis (at most LANDSCOPE_MAX_ANALYSIS_POINTS rows) and
laid out row-major, ny rows of nx, with null where no point is stored yet. The columns that
may not be measured are told apart from NaN by the analysis itself: test_loss and test_acc
only when its spec asked for the test set, acc only once some point has one (classification).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.analysis_spec import AnalysisSpec, split_environments
from server.db.models import Analysis, AnalysisPoint, AnalysisValue
from server.schemas import json_float
from server.schemas_analyses import AnalysisDetail, AnalysisOut, AnalysisStep, Progress

COLUMNS = ("loss", "acc", "test_loss", "test_acc")
CSV_HEADER = ("analysis_id", "run_id", "step", "idx", "ix", "iy", "x", "y", *COLUMNS)


def analysis_out(a: Analysis) -> AnalysisOut:
    return AnalysisOut(
        id=a.id, run_id=a.run_id, experiment_id=a.experiment_id, group_id=a.group_id,
        kind=a.kind, bn_mode=a.bn_mode, spec=a.spec, status=a.status,
        progress=Progress(done=a.done_points, total=a.total_points), error=a.error,
        cost=a.cost, worker=a.worker, created_at=a.created_at, enqueued_at=a.enqueued_at,
        started_at=a.started_at, finished_at=a.finished_at,
    )


def _points(session: Session, analysis_id: int) -> dict[int, list[tuple]]:
    rows = session.execute(
        select(AnalysisPoint.step, AnalysisPoint.idx, AnalysisPoint.loss, AnalysisPoint.acc,
               AnalysisPoint.test_loss, AnalysisPoint.test_acc)
        .where(AnalysisPoint.analysis_id == analysis_id)
        .order_by(AnalysisPoint.step, AnalysisPoint.idx)
    ).all()
    by_step: dict[int, list[tuple]] = defaultdict(list)
    for step, *rest in rows:
        by_step[step].append(tuple(rest))
    return by_step


def _nan_for_null(v: float | None) -> float:
    # SQLite stores NaN as NULL; in a measured column NULL can only have been NaN.
    return math.nan if v is None else v


def _grid(points: list[tuple], col: int, ny: int, nx: int) -> list[list[Any]]:
    grid: list[list[Any]] = [[None] * nx for _ in range(ny)]
    for row in points:
        idx, value = row[0], row[1 + col]
        if 0 <= idx < ny * nx:
            grid[idx // nx][idx % nx] = json_float(value)
    return grid


def analysis_detail(session: Session, a: Analysis) -> AnalysisDetail:
    spec = AnalysisSpec.model_validate(a.spec)
    ny, nx = spec.grid_shape()
    points = _points(session, a.id)
    values: dict[int, dict[str, Any]] = defaultdict(dict)
    for step, name, value in session.execute(
        select(AnalysisValue.step, AnalysisValue.name, AnalysisValue.value)
        .where(AnalysisValue.analysis_id == a.id)
    ):
        values[step][name] = value
    measured_acc = any(r[2] is not None for rows in points.values() for r in rows)
    steps: dict[str, AnalysisStep] = {}
    for step in sorted(set(spec.steps or []) | set(values)):
        rows = [(r[0], _nan_for_null(r[1]), r[2],
                 _nan_for_null(r[3]) if spec.test_set else None, r[4])
                for r in points.get(step, [])]
        gridded = nx > 0 and step in (spec.steps or [])

        def grid(col: int, wanted: bool, rows=rows, gridded=gridded) -> list[list[Any]] | None:
            return _grid(rows, col, ny, nx) if gridded and wanted else None

        y = spec.y_axis()
        named, envs = split_environments(values.get(step, {}))
        steps[str(step)] = AnalysisStep(
            x=spec.x_axis().values() if nx else None,
            y=y.values() if y is not None and nx else None,
            loss=grid(0, True), acc=grid(1, measured_acc),
            test_loss=grid(2, spec.test_set), test_acc=grid(3, spec.test_set and measured_acc),
            values=named, environments=envs,
        )
    return AnalysisDetail(**analysis_out(a).model_dump(), steps=steps)


def _cell(v: float | None) -> str:
    return "" if v is None else repr(float(v))  # nan, inf, -inf as words, as the runs' CSV


def analysis_csv(session: Session, a: Analysis) -> str:
    """Every stored point: analysis_id,run_id,step,idx,ix,iy,x,y,loss,acc,test_loss,test_acc.
    Values in full precision; non-finite as nan, inf, -inf; not measured: empty."""
    spec = AnalysisSpec.model_validate(a.spec)
    ny, nx = spec.grid_shape()
    xs = spec.x_axis().values() if nx else []
    y_axis = spec.y_axis()
    ys = y_axis.values() if y_axis is not None else None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for step, rows in sorted(_points(session, a.id).items()):
        for idx, loss, acc, test_loss, test_acc in rows:
            if nx == 0 or not 0 <= idx < ny * nx:
                continue
            iy, ix = divmod(idx, nx)
            test = spec.test_set
            writer.writerow((
                a.id, a.run_id, step, idx, ix, iy, repr(xs[ix]),
                repr(ys[iy]) if ys is not None else "",
                _cell(_nan_for_null(loss)), _cell(acc),
                _cell(_nan_for_null(test_loss)) if test else "", _cell(test_acc) if test else "",
            ))
    return buf.getvalue()
