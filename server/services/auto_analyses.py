"""An experiment's analyses: run on each of its runs as soon as the run succeeds.

An experiment carries a list of analysis specs (ExperimentCreate.analyses; by default its
preset's: server/presets.py). They are checked when the experiment is posted, against every
run's spec, as far as they can be before the runs exist: the steps must be in each run's
snapshot schedule (step None: the run's last step, always saved), PCA directions must have
enough scheduled snapshots, and the estimated cost must fit the server's analysis limits;
errors are 422 at ["body", "analyses", i, ...]. An interpolation towards another run is
refused: the runs it could name do not exist yet.

When a run succeeds the worker creates them in the transaction that records the success
(worker/runner.py): one row per entry, `auto_index` its place in the list, unique per run,
so a redelivered task cannot create them twice. Rows are checked again as a request would be
(server/services/analyses.py, plan_analyses): an entry that no longer fits (the server's
limits lowered meanwhile, a snapshot file lost) is saved `failed` with the reason, never
silently dropped. Each entry's analyses share one group across the experiment's runs (the
first one's id), so the dashboard compares the runs' surfaces with one colour scale. The
worker sends them after its commit; the reconciler sends any left unsent
(server/services/analysis_reconcile.py: queued, enqueued_at NULL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.analysis_cost import estimate_analysis
from server.analysis_spec import AnalysisSpec
from server.db.models import AdmissionLock, Analysis, Experiment, Run, utcnow
from server.presets import Preset
from server.schemas_analyses import AnalysisCreate
from server.services import plugins
from server.services.analyses import limit_violations, off_schedule, plan_analyses
from server.services.errors import Conflict, InvalidRequest
from server.services.specs import Origin, locate_first
from server.settings import Settings
from server.spec import RunSpec, flatten

LOC: tuple[str, ...] = ("body", "analyses")


def requested(given: Sequence[AnalysisSpec] | None, preset: Preset | None) -> list[AnalysisSpec]:
    """The request's analyses; None: the preset's (no preset: none); []: none."""
    if given is not None:
        return list(given)
    return [AnalysisSpec.model_validate(a) for a in (preset.analyses if preset else ())]


def stored(specs: Sequence[AnalysisSpec]) -> list[dict[str, Any]]:
    """As the experiment keeps them: every field, so later default changes alter nothing."""
    return [s.model_dump(mode="json") for s in specs]


def scheduled_snapshots(spec: RunSpec, upto: int) -> int:
    """How many snapshots a run of `spec` saves at steps 0..upto."""
    cfg, last = spec.snapshots, spec.steps
    listed = {0, *(s for s in cfg.steps if s <= upto), *((last,) if last <= upto else ())}
    if not cfg.every:
        return len(listed)
    return upto // cfg.every + 1 + sum(1 for s in listed if s % cfg.every)


def check(specs: Sequence[AnalysisSpec], runs: Sequence[RunSpec], settings: Settings,
          *, explicit: bool) -> None:
    """InvalidRequest at ["body", "analyses", i, ...] for the first entry that cannot run on
    every run. `explicit`: the request wrote them (else they are the preset's defaults)."""
    for i, spec in enumerate(specs):
        loc = (*LOC, i)
        whose = "" if explicit else " (the preset's default analyses; [] runs none)"
        origins = [Origin(loc, frozenset(flatten(spec.model_dump(exclude_unset=True))))]
        d = spec.directions
        if d.kind == "interpolation" and d.source == "run":
            raise InvalidRequest(
                (*loc, "directions", "source"),
                "an experiment's runs do not exist yet to interpolate towards; POST "
                "/api/v1/analyses once they have finished", "not_available")
        for n, run in enumerate(runs):
            steps = spec.steps if spec.steps is not None else [run.steps]
            if (why := off_schedule(run, steps)) is not None:
                raise InvalidRequest((*loc, "steps"), f"run {n} of the experiment {why}{whose}",
                                     "not_a_snapshot_step")
            if spec.kind == "trajectory" or d.kind == "pca":
                need = 2 if spec.kind == "slice" else 3
                for step in steps:
                    if scheduled_snapshots(run, step) < need:
                        raise InvalidRequest(
                            (*loc, "steps"),
                            f"PCA directions at step {step} need {need} snapshots up to it; "
                            f"run {n} of the experiment saves "
                            f"{scheduled_snapshots(run, step)} (add snapshots.every)",
                            "not_enough_snapshots")
            if (why := plugins.analysis_refusal(run)) is not None:
                raise InvalidRequest(loc, f"run {n} of the experiment: {why}{whose}",
                                     "plugin_analyses")
            snaps = scheduled_snapshots(run, max(steps))
            cost = estimate_analysis(run, spec.model_copy(update={"steps": steps}),
                                     snapshots=snaps)
            for paths, msg in limit_violations(cost, settings):
                raise InvalidRequest(locate_first(paths, origins, loc), f"{msg}{whose}",
                                     "server_limit")


def create_for_run(session: Session, settings: Settings, run_id: int) -> list[Analysis]:
    """The experiment's analyses of a run that has just succeeded (in the caller's
    transaction, not committed): the queued ones to send, in entry order. Entries created
    before (a redelivery) are skipped; an entry that cannot run now is saved failed."""
    run = session.get(Run, run_id)
    if run is None or run.status != "succeeded" or run.experiment_id is None:
        return []
    exp = session.get(Experiment, run.experiment_id)
    entries = (exp.analyses or []) if exp is not None else []
    if not entries:
        return []
    # The admission lock (as analyses' requests take it): one writer at a time here, so the
    # runs of an experiment finishing together agree on each entry's group.
    session.execute(update(AdmissionLock).where(AdmissionLock.id == 1)
                    .values(admitted=AdmissionLock.admitted + 1))
    done = set(session.scalars(select(Analysis.auto_index).where(
        Analysis.run_id == run.id, Analysis.auto_index.is_not(None))))
    rows = []
    for i, entry in enumerate(entries):
        if i in done:
            continue
        row = _row(session, settings, run, i, entry)
        session.add(row)
        session.flush()
        row.group_id = session.scalar(select(func.min(Analysis.id)).where(
            Analysis.experiment_id == run.experiment_id, Analysis.auto_index == i))
        rows.append(row)
    session.flush()
    return [r for r in rows if r.status == "queued"]


def _row(session: Session, settings: Settings, run: Run, index: int,
         entry: dict[str, Any]) -> Analysis:
    common = {"experiment_id": run.experiment_id, "run_id": run.id, "group_id": 0,
              "auto_index": index, "queue": run.queue, "done_points": 0, "prepared_steps": []}
    try:
        spec = AnalysisSpec.model_validate(entry)
        planned = plan_analyses(session, settings, AnalysisCreate(run_id=run.id, spec=spec))[0]
    except (ValidationError, InvalidRequest, Conflict) as exc:
        msg = exc.msg if isinstance(exc, InvalidRequest) else str(exc)
        steps = entry.get("steps") or [run.total]  # as a planned one reads: resolved
        return Analysis(**common, kind=str(entry.get("kind", "?"))[:16],
                        bn_mode=str(entry.get("bn_mode", "?"))[:16],
                        spec={**entry, "steps": steps},
                        status="failed", total_points=0, finished_at=utcnow(),
                        error=f"the experiment's analysis {index} cannot run on run {run.id}: "
                              f"{msg}")
    return Analysis(**common, kind=planned.spec.kind, bn_mode=planned.spec.bn_mode,
                    spec=planned.spec.model_dump(mode="json"), status="queued",
                    total_points=planned.cost.points, cost=planned.cost.as_dict())
