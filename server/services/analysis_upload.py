"""Store an analysis the SDK computed in-process (landscope.analyse) as a finished analysis.

The rows are those a worker's analysis leaves (Analysis, AnalysisPoint, AnalysisValue), with
status "succeeded", queue "sdk" and worker "sdk", so GET /analyses/{id}, its CSV and the
dashboard's Landscape tab show it like any other; no task is ever sent for it (the
reconciler only looks at queued and running analyses). Only SDK runs take uploads: a
worker-trained run's analyses are measured by workers, from its snapshots.
Services take the session and never commit; the request edge commits.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from server.db.models import Analysis, AnalysisPoint, AnalysisValue, Run, utcnow
from server.schemas import json_float
from server.schemas_analysis_upload import MAX_VALUE_NAME, AnalysisUpload
from server.services.admission import Claim, prior_resource, remember
from server.services.errors import Conflict, InvalidRequest, NotFound

COLUMNS = ("acc", "test_loss", "test_acc")


def store_upload(session: Session, run_id: int, body: AnalysisUpload,
                 idem: Claim | None = None) -> tuple[Analysis, bool]:
    """(the stored analysis, True), not committed; (the earlier one, False) for a retry with
    a known Idempotency-Key. InvalidRequest names the field; NotFound, Conflict as usual."""
    if (prior := prior_resource(session, idem)) is not None:
        return _earlier(session, prior), False
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound("run", run_id)
    if getattr(run, "source", "service") != "sdk":
        raise Conflict(f"run {run_id} is trained by a worker: its analyses are measured from "
                       "its snapshots (POST /analyses), not uploaded")
    spec = body.spec
    if spec.steps is None:
        raise InvalidRequest(("body", "spec", "steps"), "name the analysed step(s)")
    steps = _check_steps(body)
    now = utcnow()
    total = spec.grid_points() * len(steps)
    row = Analysis(
        experiment_id=run.experiment_id, run_id=run.id, group_id=0, kind=spec.kind,
        bn_mode=spec.bn_mode, spec=spec.model_dump(mode="json"), status="succeeded",
        queue="sdk", total_points=total, done_points=0, prepared_steps=sorted(steps),
        cost=None, worker="sdk", created_at=now, enqueued_at=now, started_at=now,
        finished_at=now, heartbeat_at=now,
    )
    session.add(row)
    session.flush()
    row.group_id = row.id
    points = [_point_rows(row.id, step, body.steps[key]) for key, step in steps.items()]
    flat = [p for rows in points for p in rows]
    if flat:
        session.execute(insert(AnalysisPoint), flat)
    values = [{"analysis_id": row.id, "step": step, "name": name, "value": json_safe(v)}
              for key, step in steps.items() for name, v in body.steps[key].values.items()]
    if values:
        session.execute(insert(AnalysisValue), values)
    row.done_points = len(flat)
    session.flush()
    remember(session, idem, row.id)
    return row, True


def _earlier(session: Session, analysis_id: int) -> Analysis:
    row = session.get(Analysis, analysis_id)
    if row is None:
        raise Conflict(f"analysis {analysis_id}, stored under this Idempotency-Key, has since "
                       "been deleted")
    return row


def _check_steps(body: AnalysisUpload) -> dict[str, int]:
    """{key: step}: exactly the spec's steps, each with consistent columns and valid indices."""
    spec = body.spec
    want = set(spec.steps or [])
    n = spec.grid_points()
    steps: dict[str, int] = {}
    for key, part in body.steps.items():
        loc = ("body", "steps", key)
        try:
            step = int(key)
        except ValueError:
            raise InvalidRequest(loc, "step keys are step numbers") from None
        if step not in want or str(step) != key:
            raise InvalidRequest(loc, f"step {key} is not one of spec.steps {sorted(want)}")
        steps[key] = step
        if len(part.loss) != len(part.idx):
            raise InvalidRequest((*loc, "loss"), f"{len(part.loss)} values for "
                                 f"{len(part.idx)} indices")
        for col in COLUMNS:
            values = getattr(part, col)
            if values is not None and len(values) != len(part.idx):
                raise InvalidRequest((*loc, col), f"{len(values)} values for "
                                     f"{len(part.idx)} indices")
        seen: set[int] = set()
        for j, i in enumerate(part.idx):
            if not 0 <= i < n or i in seen:
                why = "repeated" if i in seen else f"outside the grid's [0, {n})"
                raise InvalidRequest((*loc, "idx", j), f"index {i} is {why}")
            seen.add(i)
        for name in part.values:
            if not 0 < len(name) <= MAX_VALUE_NAME:
                raise InvalidRequest((*loc, "values", name),
                                     f"value names have 1 to {MAX_VALUE_NAME} characters")
    missing = sorted(want - set(steps.values()))
    if missing:
        raise InvalidRequest(("body", "steps"), f"no results for step(s) {missing}")
    return steps


def _point_rows(analysis_id: int, step: int, part) -> list[dict[str, Any]]:
    cols = {c: getattr(part, c) or [None] * len(part.idx) for c in COLUMNS}
    return [{"analysis_id": analysis_id, "step": step, "idx": i, "loss": float(loss),
             "acc": cols["acc"][j], "test_loss": cols["test_loss"][j],
             "test_acc": cols["test_acc"][j]}
            for j, (i, loss) in enumerate(zip(part.idx, part.loss, strict=True))]


def json_safe(value: Any) -> Any:
    """As the worker's SqlAnalysisSink stores values: non-finite floats as JSON strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else json_float(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value
