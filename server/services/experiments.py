"""Experiments: a base spec and the values to vary, saved as one run per combination.

Runs of one experiment differ only in the varied keys, so they share seed and data order
unless the seed itself is varied: the comparison the paper's figures make. The analyses to
run on each run once it succeeds are checked against every run here and kept on the
experiment (server/services/auto_analyses.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, selectinload

from server.analysis_spec import AnalysisSpec
from server.db.models import ACTIVE_STATUSES, Experiment, Run
from server.experiment_cost import experiment_cost as cost_of
from server.presets import Preset
from server.schemas import ExperimentCreate
from server.services import auto_analyses, plugins
from server.services.admission import Claim, admit, prior_resource, remember
from server.services.errors import Conflict, InvalidRequest, NotFound
from server.services.run_filters import with_experiment_tags
from server.services.runs import delete_run, new_run, run_name
from server.services.specs import (
    Origin,
    find_preset,
    merge,
    reject_oversized,
    reject_unstorable,
    validate,
)
from server.settings import Settings
from server.spec import RunSpec, SpecError, expand_vary, flatten

BASE: tuple[str, ...] = ("body", "base")
VARY: tuple[str, ...] = ("body", "vary")


def create_experiment(
    session: Session, settings: Settings, req: ExperimentCreate, idem: Claim | None = None
) -> tuple[Experiment, bool]:
    """(the experiment, True) once saved with its runs, not committed; or (the experiment this
    request's Idempotency-Key already created, False): the caller answers with it again."""
    if (prior := prior_resource(session, idem)) is not None:  # a retry: no need to validate
        return replayed_experiment(session, prior), False
    preset, base, vary, specs, wanted = plan_experiment(session, settings, req)
    if (prior := admit(session, settings, len(specs), idem)) is not None:  # sent meanwhile
        return replayed_experiment(session, prior), False

    exp = Experiment(
        name=req.name or req.preset or "experiment",
        preset=req.preset,
        base_spec=base,
        vary=vary,
        analyses=auto_analyses.stored(wanted),
    )
    session.add(exp)
    session.flush()
    # expand_vary walks the same product in the same order: zip gives each run its combination.
    combos = itertools.product(*vary.values())
    for spec, combo in zip(specs, combos, strict=True):
        varied = dict(zip(vary, combo, strict=True))
        exp.runs.append(new_run(spec, run_name(spec, varied), exp.id))
    session.flush()
    remember(session, idem, exp.id)
    return exp, True


def plan_experiment(session: Session, settings: Settings, req: ExperimentCreate
                    ) -> tuple[Preset | None, dict, dict, list[RunSpec], list[AnalysisSpec]]:
    """(preset, base, vary, run specs, analyses) of a request: every check of a launch but
    the queue's room; InvalidRequest at the field otherwise."""
    preset = find_preset(req.preset)
    base = merge(preset.base if preset else {}, req.base, BASE)
    vary = {**(preset.vary if preset else {}), **req.vary}
    reject_oversized(req.vary, VARY)
    reject_unstorable(req.vary, VARY)
    n = math.prod(len(v) for v in vary.values())  # before expanding: the product may be huge
    if n > settings.max_runs_per_experiment:
        raise InvalidRequest(
            VARY,
            f"{n} runs in the cross product; this server takes at most "
            f"{settings.max_runs_per_experiment} per experiment "
            "(LANDSCOPE_MAX_RUNS_PER_EXPERIMENT)",
            "server_limit",
        )
    try:
        dicts = expand_vary(base, vary)
    except SpecError as exc:  # an unknown or non-section vary key, named as written
        key = exc.path.removeprefix("vary.")
        raise InvalidRequest((*VARY, key), exc.message) from None
    origins = [
        Origin(VARY, frozenset(vary), dotted=True),
        Origin(BASE, frozenset(flatten(req.base))),
    ]
    specs = [validate(d, settings, origins, BASE) for d in dicts]
    plugins.check_available(session, settings, specs, origins, BASE)
    wanted = auto_analyses.requested(req.analyses, preset)
    auto_analyses.check(wanted, specs, settings, explicit=req.analyses is not None)
    return preset, base, vary, specs, wanted


def experiment_cost(session: Session, settings: Settings, req: ExperimentCreate
                    ) -> dict[str, Any]:
    """What create_experiment would launch, costed (server/experiment_cost.py): validated
    exactly as a launch is (the same 422s), nothing saved, no room in the queue taken."""
    _, _, _, specs, wanted = plan_experiment(session, settings, req)
    return cost_of(specs, wanted)


def replayed_experiment(session: Session, exp_id: int) -> Experiment:
    try:
        return get_experiment(session, exp_id)
    except NotFound:
        raise Conflict(f"experiment {exp_id}, created by an earlier request with this "
                       "Idempotency-Key, has since been deleted; use a new key to submit "
                       "again") from None


def delete_experiment(session: Session, exp_id: int,
                      files_of: Callable[[int], list[Path]] | None = None
                      ) -> tuple[list[int], list[Path]]:
    """Delete an experiment whose runs have all finished, with every run (their metrics,
    snapshots' rows and analyses); returns the deleted runs' ids and `files_of` each of them
    (its files on disk, listed under the lock, so that none added meanwhile is missed: the
    caller removes them after the commit). Not committed.

    A queued or running run is a Conflict naming it: its worker would otherwise write into a
    run that no longer exists (cancel it first, as for one run)."""
    # The row lock first (PostgreSQL): an SDK run joining this experiment meanwhile waits for
    # the delete (its foreign key check needs the row) instead of slipping in after the list.
    session.execute(select(Experiment.id).where(Experiment.id == exp_id).with_for_update())
    exp = get_experiment(session, exp_id)
    active = [r.id for r in exp.runs if r.status in ACTIVE_STATUSES]
    if active:
        raise Conflict(f"experiment {exp_id} has queued or running runs "
                       f"({', '.join(map(str, active))}): cancel them first")
    run_ids = [r.id for r in exp.runs]
    files = [f for run_id in run_ids for f in (files_of(run_id) if files_of else [])]
    for run_id in run_ids:
        delete_run(session, run_id)
    session.expunge(exp)  # its runs' rows are gone: delete by id, not through the relationship
    session.execute(delete(Experiment).where(Experiment.id == exp_id))
    return run_ids, files


def get_experiment(session: Session, exp_id: int) -> Experiment:
    exp = session.get(Experiment, exp_id, options=[
        selectinload(Experiment.runs).selectinload(Run.tag_rows),
        selectinload(Experiment.tag_rows)])
    if exp is None:
        raise NotFound("experiment", exp_id)
    return exp


def list_experiments(
    session: Session, *, limit: int = 50, offset: int = 0, tags: Sequence[str] = ()
) -> tuple[Sequence[Experiment], int]:
    """A page of experiments (those carrying every one of `tags`), newest first."""
    stmt = with_experiment_tags(select(Experiment), tags)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(Experiment.id.desc()).limit(limit).offset(offset)
        .options(selectinload(Experiment.tag_rows))
    ).all()
    return rows, total


def status_counts(session: Session, exp_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """{experiment id: {status: runs}} in one GROUP BY for a whole page of experiments."""
    out: dict[int, dict[str, Any]] = {i: {} for i in exp_ids}
    if exp_ids:
        rows = session.execute(
            select(Run.experiment_id, Run.status, func.count())
            .where(Run.experiment_id.in_(exp_ids))
            .group_by(Run.experiment_id, Run.status)
        )
        for exp_id, status, n in rows:
            out[exp_id][status] = n
    return out
