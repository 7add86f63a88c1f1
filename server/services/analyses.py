"""Analyses: create (for a run, or every run of an experiment), list, cancel, delete, send.

A request is checked against each run before anything is saved: the steps asked must be in
the run's snapshot schedule (step 0 and the last step always are; RunSpec.snapshots) and
indexed in the snapshots table (the database is the source of truth: a run still training
has not reached a later step yet), the directions must have what they need (PCA: enough
snapshots; interpolation: step 0, or the other run's snapshots), and the estimated cost
(server/analysis_cost.py) must fit the server's limits. Errors name the request field.
Services take the session and never commit; the request edge commits, then sends.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from server.analysis_cost import AnalysisCost, estimate_analysis
from server.analysis_spec import AnalysisSpec
from server.cost import UnknownCost
from server.db.models import (
    ANALYSIS_ACTIVE,
    AdmissionLock,
    Analysis,
    AnalysisPoint,
    AnalysisValue,
    Experiment,
    Run,
    Snapshot,
    utcnow,
)
from server.queue import send_analysis_prepare
from server.schemas_analyses import AnalysisCreate
from server.services import plugins
from server.services.admission import Claim, prior_resource, remember
from server.services.errors import Conflict, InvalidRequest, NotFound
from server.services.specs import Origin, locate_first
from server.settings import Settings
from server.spec import RunSpec, SpecError, build_spec, flatten

SPEC_LOC = ("body", "spec")
INT32_MAX = 2**31 - 1  # ids are 4-byte integers on PostgreSQL


def analysis_dir(settings: Settings, analysis_id: int) -> Path:
    """Where an analysis's files live: its directions, one file per analysed step."""
    return settings.data_dir / "analyses" / f"analysis-{analysis_id}"


def directions_path(settings: Settings, analysis_id: int, step: int) -> Path:
    return analysis_dir(settings, analysis_id) / f"directions-{step:08d}.pt"


def snapshot_dir(settings: Settings, run_id: int) -> Path:
    """Where a run's snapshot files live (worker/snapshot_index.py writes them)."""
    return settings.data_dir / "snapshots" / f"run-{run_id}"


def run_files(session: Session, settings: Settings, run_id: int) -> list[Path]:
    """A run's snapshots and its analyses' files: removed with the run (its rows cascade)."""
    ids = session.scalars(select(Analysis.id).where(Analysis.run_id == run_id))
    return [snapshot_dir(settings, run_id), *(analysis_dir(settings, i) for i in ids)]


@dataclass(frozen=True)
class Planned:
    """One analysis a request would create: its run, its spec (steps resolved), its cost."""

    run: Run
    spec: AnalysisSpec
    cost: AnalysisCost


# -- create -----------------------------------------------------------------------------------


def plan_analyses(session: Session, settings: Settings, req: AnalysisCreate) -> list[Planned]:
    """Check the request against every run it names; InvalidRequest or Conflict at the first
    problem. Reads only."""
    runs = _target_runs(session, req)
    origins = [Origin(SPEC_LOC, frozenset(flatten(req.spec.model_dump(exclude_unset=True))))]
    planned = []
    for run in runs:
        run_spec = _run_spec(run)
        recorded = (run.info or {}).get("size") if isinstance(run.info, dict) else None
        if plugins.analysis_refusal(run_spec) is not None and recorded is None:
            # A plug-in's sizes are known once a worker has built the run (run.info["size"]).
            raise Conflict(f"run {run.id}: its plug-in model or dataset has not been built "
                           "by a worker yet, so the analysis cost cannot be bounded; try "
                           "again once it runs, or use landscope.analyse(...) in your own "
                           "process")
        steps = req.spec.steps if req.spec.steps is not None else [run_spec.steps]
        spec = req.spec.model_copy(update={"steps": steps})
        saved = _saved_steps(session, run.id)
        _check_schedule(run, run_spec, steps)
        _check_saved(run, steps, saved)
        _check_directions(session, run, run_spec, spec, saved)
        snaps = sum(1 for s in saved if s <= max(steps))
        try:
            cost = estimate_analysis(run_spec, spec, snapshots=snaps, recorded=recorded)
        except UnknownCost as exc:
            raise Conflict(f"run {run.id}: {exc}") from None
        for paths, msg in limit_violations(cost, settings):
            raise InvalidRequest(locate_first(paths, origins, SPEC_LOC), msg, "server_limit")
        planned.append(Planned(run, spec, cost))
    return planned


def create_analyses(
    session: Session, settings: Settings, req: AnalysisCreate, idem: Claim | None = None
) -> tuple[list[Analysis], dict[str, Any], bool]:
    """(the analyses, their total cost, True) once saved, not committed; or, for a dry run,
    ([], cost, False); or, for a retry with a known Idempotency-Key, (what it created, cost,
    False)."""
    if (prior := prior_resource(session, idem)) is not None:
        return _replayed(session, prior), {}, False
    planned = plan_analyses(session, settings, req)
    cost = total_cost([p.cost for p in planned])
    if req.dry_run:
        return [], cost, False
    _lock(session)  # one request at a time from here: the key is checked and stored under it
    if (prior := prior_resource(session, idem)) is not None:
        return _replayed(session, prior), cost, False
    rows = [
        Analysis(
            experiment_id=req.experiment_id or p.run.experiment_id, run_id=p.run.id,
            group_id=0,  # the group is named after its first analysis: set once ids exist
            kind=p.spec.kind, bn_mode=p.spec.bn_mode, spec=p.spec.model_dump(mode="json"),
            status="queued", queue=p.run.queue, total_points=p.cost.points, done_points=0,
            prepared_steps=[], cost=p.cost.as_dict(),
        )
        for p in planned
    ]
    session.add_all(rows)
    session.flush()
    for row in rows:
        row.group_id = rows[0].id
    session.flush()
    remember(session, idem, rows[0].id)
    return rows, cost, True


def _lock(session: Session) -> None:
    # The admission lock of runs (server/services/admission.py): it serialises Idempotency-Key
    # lookups and inserts, so two requests with one key create one group.
    session.execute(update(AdmissionLock).where(AdmissionLock.id == 1)
                    .values(admitted=AdmissionLock.admitted + 1))


def _replayed(session: Session, group_id: int) -> list[Analysis]:
    rows = list(session.scalars(select(Analysis).where(Analysis.group_id == group_id)
                                .order_by(Analysis.id)))
    if not rows:
        raise Conflict(f"the analyses created by an earlier request with this Idempotency-Key "
                       f"(group {group_id}) have since been deleted; use a new key")
    return rows


def _target_runs(session: Session, req: AnalysisCreate) -> list[Run]:
    if req.run_id is not None:
        run = session.get(Run, req.run_id)
        if run is None:
            raise InvalidRequest(("body", "run_id"), f"run {req.run_id} not found", "not_found")
        return [run]
    if session.get(Experiment, req.experiment_id) is None:
        raise InvalidRequest(("body", "experiment_id"),
                             f"experiment {req.experiment_id} not found", "not_found")
    runs = list(session.scalars(select(Run).where(Run.experiment_id == req.experiment_id)
                                .order_by(Run.id)))
    if not runs:
        raise InvalidRequest(("body", "experiment_id"),
                             f"experiment {req.experiment_id} has no runs", "no_runs")
    return runs


def _run_spec(run: Run) -> RunSpec:
    if run.source == "sdk":  # no spec, no snapshots: the SDK analyses in its own process
        raise Conflict(f"run {run.id} is an SDK run: workers cannot rebuild its network; "
                       "analyse it in its own process with landscope.analyse(...)")
    try:
        return build_spec(run.spec)
    except SpecError as exc:  # stored by an older version that no longer validates
        raise Conflict(f"run {run.id}: its spec no longer validates ({exc})") from None


def _saved_steps(session: Session, run_id: int) -> list[int]:
    return list(session.scalars(select(Snapshot.step).where(Snapshot.run_id == run_id)
                                .order_by(Snapshot.step)))


def _schedule_text(spec: RunSpec) -> str:
    cfg = spec.snapshots
    parts = ["step 0", f"the last step {spec.steps}"]
    if cfg.every:
        parts.append(f"every {cfg.every} steps")
    if cfg.steps:
        parts.append(f"steps {cfg.steps}")
    return ", ".join(parts)


def off_schedule(spec: RunSpec, steps: Sequence[int]) -> str | None:
    """Why some of `steps` are not snapshot steps of a run of `spec`; None if all are (also
    used for an experiment's analyses, before its runs exist: server/services/
    auto_analyses.py)."""
    off = [s for s in steps if s > spec.steps or not spec.snapshots.due(s, spec.steps)]
    if not off:
        return None
    return f"saves no snapshot at step(s) {_listed(off)}; it saves {_schedule_text(spec)}"


def _check_schedule(run: Run, spec: RunSpec, steps: Sequence[int]) -> None:
    if (why := off_schedule(spec, steps)) is not None:
        raise InvalidRequest((*SPEC_LOC, "steps"), f"run {run.id} {why}", "not_a_snapshot_step")


def _check_saved(run: Run, steps: Sequence[int], saved: Sequence[int]) -> None:
    missing = sorted(set(steps) - set(saved))
    if not missing:
        return
    if run.status in ("queued", "running"):
        raise Conflict(f"run {run.id} is {run.status} at step {run.step} and has not saved "
                       f"step(s) {_listed(missing)} yet; analyse them once it has")
    raise Conflict(f"run {run.id} ({run.status}) has no snapshot at step(s) "
                   f"{_listed(missing)}; saved: {_listed(saved) or 'none'}")


def _check_directions(session: Session, run: Run, run_spec: RunSpec, spec: AnalysisSpec,
                      saved: Sequence[int]) -> None:
    d = spec.directions
    if spec.kind == "trajectory" or d.kind == "pca":
        need = 2 if spec.kind == "slice" else 3  # theta_i - theta_T, i != T: 1 or 2 directions
        for step in spec.steps or []:
            have = [s for s in saved if s <= step]
            if len(have) < need:
                raise Conflict(
                    f"run {run.id}: PCA directions at step {step} need at least {need} "
                    f"snapshots up to it; it has {_listed(have) or 'none'}"
                )
    if d.kind != "interpolation":
        return
    if d.source == "init" and 0 not in saved:
        raise Conflict(f"run {run.id} has no snapshot at step 0 to interpolate from")
    if d.source == "run":
        loc = (*SPEC_LOC, "directions", "other_run")
        other = session.get(Run, d.other_run) if d.other_run <= INT32_MAX else None
        if other is None:
            raise InvalidRequest(loc, f"run {d.other_run} not found", "not_found")
        if _architecture(_run_spec(other)) != _architecture(run_spec):
            raise InvalidRequest(loc, f"run {d.other_run} has another architecture than run "
                                 f"{run.id}: weights cannot be interpolated", "architecture")
        missing = sorted(set(spec.steps or []) - set(_saved_steps(session, other.id)))
        if missing:
            raise Conflict(f"run {other.id} has no snapshot at step(s) {_listed(missing)}")


def _architecture(spec: RunSpec) -> tuple:
    """What fixes the parameters' names and shapes (norm too: its affine parameters)."""
    widths = tuple(spec.layer_widths())
    return (spec.model, spec.vgg_config, spec.depth, widths, spec.norm, spec.dataset,
            spec.input_dim if spec.dataset == "gaussian_linear" else None)


def _listed(steps: Iterable[int]) -> str:
    return ", ".join(map(str, steps))


def limit_violations(c: AnalysisCost, s: Settings) -> Iterable[tuple[tuple[str, ...], str]]:
    """(fields, message) for every quantity over a server limit, its drivers first."""
    if c.points > s.max_analysis_points:
        yield c.drivers["points"], (
            f"this analysis would evaluate {c.points:,} grid points ({c.steps} step(s)); this "
            f"server allows {s.max_analysis_points:,} (LANDSCOPE_MAX_ANALYSIS_POINTS)"
        )
    if c.hvps > s.max_lanczos_steps:
        yield c.drivers["hvps"], (
            f"this analysis would need {c.hvps:,} Hessian-vector products ({c.steps} step(s)); "
            f"this server allows {s.max_lanczos_steps:,} (LANDSCOPE_MAX_LANCZOS_STEPS)"
        )
    if c.memory_mb > s.max_analysis_memory_mb:
        yield c.drivers["memory"], (
            f"this analysis would need about {c.memory_mb:,.0f} MiB; this server allows "
            f"{s.max_analysis_memory_mb:,.0f} (LANDSCOPE_MAX_ANALYSIS_MEMORY_MB)"
        )


def total_cost(costs: Sequence[AnalysisCost]) -> dict[str, Any]:
    """Passes and points summed over the analyses; sizes (memory, parameters) at most."""
    summed = ("steps", "points", "forward_passes", "backward_passes", "hvps",
              "forward_equivalents")
    largest = ("eval_samples", "batch_size", "params", "memory_mb")
    out: dict[str, Any] = {"analyses": len(costs)}
    dicts = [c.as_dict() for c in costs]
    out.update({k: sum(d[k] for d in dicts) for k in summed})
    out.update({k: max((d[k] for d in dicts), default=0) for k in largest})
    return out


# -- send -------------------------------------------------------------------------------------


def send_analyses(session: Session, app: Celery, analyses: Sequence[Analysis]) -> list[int]:
    """Send committed analyses (their prepare task), stamping enqueued_at on each one sent;
    returns the ids left unsent when the broker failed (the reconciler sends them later)."""
    for i, a in enumerate(analyses):
        try:
            send_analysis_prepare(app, a.id, a.queue)
        except BrokerError:
            return [b.id for b in analyses[i:]]
        a.enqueued_at = utcnow()
        session.flush()
    return []


# -- read, cancel, delete ---------------------------------------------------------------------


def get_analysis(session: Session, analysis_id: int) -> Analysis:
    a = session.get(Analysis, analysis_id)
    if a is None:
        raise NotFound("analysis", analysis_id)
    return a


def list_analyses(
    session: Session, *, run_id: int | None = None, experiment_id: int | None = None,
    group_id: int | None = None, status: str | None = None, limit: int = 50, offset: int = 0,
) -> tuple[Sequence[Analysis], int]:
    """A page of analyses, newest first, and how many match in all."""
    stmt: Select = select(Analysis)
    for column, value in ((Analysis.run_id, run_id), (Analysis.experiment_id, experiment_id),
                          (Analysis.group_id, group_id), (Analysis.status, status)):
        if value is not None:
            stmt = stmt.where(column == value)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = session.scalars(stmt.order_by(Analysis.id.desc()).limit(limit).offset(offset)).all()
    return rows, total or 0


def cancel_analysis(session: Session, analysis_id: int) -> Analysis:
    """Queued or running: cancelled now. A worker checks before each chunk and stops there;
    a chunk already in flight may still store its points. Finished: Conflict."""
    hit = session.execute(
        update(Analysis)
        .where(Analysis.id == analysis_id, Analysis.status.in_(ANALYSIS_ACTIVE))
        .values(status="cancelled", finished_at=utcnow())
    ).rowcount
    a = get_analysis(session, analysis_id)
    session.refresh(a)
    if not hit:
        raise Conflict(f"analysis {analysis_id} has already finished ({a.status}); "
                       "nothing to cancel")
    return a


def delete_analysis(session: Session, settings: Settings, analysis_id: int) -> Path:
    """Delete a finished analysis with its points and values; returns its files' directory,
    for the caller to remove once the deletion is committed."""
    a = get_analysis(session, analysis_id)
    if a.status in ANALYSIS_ACTIVE:
        raise Conflict(f"analysis {analysis_id} is {a.status}: cancel it first")
    session.execute(delete(AnalysisPoint).where(AnalysisPoint.analysis_id == analysis_id))
    session.execute(delete(AnalysisValue).where(AnalysisValue.analysis_id == analysis_id))
    gone = session.execute(delete(Analysis).where(
        Analysis.id == analysis_id, Analysis.status.not_in(ANALYSIS_ACTIVE))).rowcount
    if not gone:
        raise Conflict(f"analysis {analysis_id} changed state while being deleted; try again")
    return analysis_dir(settings, analysis_id)


def remove_files(*directories: Path) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
