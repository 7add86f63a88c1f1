"""Runs: create, list, cancel, delete, and hand to the broker.

State changes are conditional UPDATEs (WHERE status = ...): a worker may move a run at the
same moment, and whichever writes first wins without the other overwriting it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session, selectinload

from server.db.metrics import delete_run_metrics
from server.db.models import ACTIVE_STATUSES, FINISHED_STATUSES, Run, utcnow
from server.queue import queue_for, send_run
from server.schemas import RunCreate
from server.services import plugins
from server.services.admission import Claim, admit, prior_resource, remember
from server.services.errors import BrokerUnavailable, Conflict, NotFound
from server.services.run_filters import RunFilters
from server.services.specs import Origin, find_preset, merge, validate
from server.settings import Settings
from server.spec import RunSpec, flatten

# Keys that RunSpec.name_hint() already shows; other varied keys are appended to run names.
_HINTED = frozenset({"model", "vgg_config", "width", "depth", "norm", "lr", "seed"})


def run_name(spec: RunSpec, varied: dict[str, Any] | None = None) -> str:
    extra = [f"{k}={v}" for k, v in (varied or {}).items() if k not in _HINTED]
    return "-".join([spec.name_hint(), *extra])[:200]


def new_run(spec: RunSpec, name: str, experiment_id: int | None = None) -> Run:
    return Run(
        experiment_id=experiment_id,
        name=name,
        spec=spec.model_dump(mode="json"),
        status="queued",
        queue=queue_for(spec.device),
        total=spec.steps,
    )


def create_run(
    session: Session, settings: Settings, req: RunCreate, idem: Claim | None = None
) -> tuple[Run, bool]:
    """(the run, True) once saved, not committed; or (the run this request's Idempotency-Key
    already created, False): nothing new, the caller answers with it again."""
    if (prior := prior_resource(session, idem)) is not None:  # a retry: no need to validate
        return replayed_run(session, prior), False
    preset = find_preset(req.preset)
    if preset is not None:
        data, fallback = preset.base, ("body", "overrides")
    else:
        data = merge({}, req.spec or {}, ("body", "spec"))
        fallback = ("body", "spec")
    data = merge(data, req.overrides, ("body", "overrides"))
    origins = [Origin(("body", "overrides"), frozenset(flatten(req.overrides)))]
    if req.spec:
        origins.append(Origin(("body", "spec"), frozenset(flatten(req.spec))))
    spec = validate(data, settings, origins, fallback)
    plugins.check_available(session, settings, [spec], origins, fallback)
    if (prior := admit(session, settings, 1, idem)) is not None:  # sent while we validated
        return replayed_run(session, prior), False
    run = new_run(spec, req.name or run_name(spec))
    session.add(run)
    session.flush()
    remember(session, idem, run.id)
    return run, True


def replayed_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise Conflict(f"run {run_id}, created by an earlier request with this "
                       "Idempotency-Key, has since been deleted; use a new key to submit again")
    return run


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound("run", run_id)
    return run


def require_run(session: Session, run_id: int) -> None:
    """NotFound unless the run exists: for reads of its measurements, which need no row
    (loading one, JSON spec and all, was a fifth of a live poll's work)."""
    if session.scalar(select(Run.id).where(Run.id == run_id)) is None:
        raise NotFound("run", run_id)


def list_runs(
    session: Session,
    *,
    status: str | None = None,
    experiment_id: int | None = None,
    name: str | None = None,
    limit: int = 50,
    offset: int = 0,
    filters: RunFilters | None = None,
) -> tuple[Sequence[Run], int]:
    """A page of runs, newest first, and how many match in all. `filters` (when given)
    replaces status/experiment_id/name."""
    filters = filters or RunFilters(status=status, experiment_id=experiment_id, name=name)
    stmt: Select = filters.apply(select(Run))
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    # The page's tags in one more query (the listing shows them), not one per run.
    rows = session.scalars(stmt.order_by(Run.id.desc()).limit(limit).offset(offset)
                           .options(selectinload(Run.tag_rows))).all()
    return rows, total or 0


def cancel_run(session: Session, run_id: int) -> Run:
    """Queued: cancelled at once (the task will see it and skip). Running: flagged, and the
    worker stops it at its next step and writes `cancelled`. Finished: Conflict."""
    now = utcnow()
    done = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "queued")
        .values(status="cancelled", finished_at=now, cancel_requested=True)
    ).rowcount
    if not done:
        session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == "running")
            .values(cancel_requested=True)
        )
    run = get_run(session, run_id)
    session.refresh(run)
    if run.status in FINISHED_STATUSES and not (done and run.status == "cancelled"):
        raise Conflict(f"run {run_id} has already finished ({run.status}); nothing to cancel")
    return run


def delete_run(session: Session, run_id: int) -> None:
    """Delete a finished run with its metrics; a queued or running one must be cancelled
    first (its worker would otherwise write into a run that no longer exists)."""
    # The row lock first (PostgreSQL): an SDK batch being stored holds a key-share lock on
    # the run (server/services/sdk_runs.py), so its points land before these deletes, not
    # after them as orphans.
    session.execute(select(Run.id).where(Run.id == run_id).with_for_update())
    run = get_run(session, run_id)
    if run.status in ACTIVE_STATUSES:
        raise Conflict(f"run {run_id} is {run.status}: cancel it first")
    # Points and rollups have no foreign key to cascade from (server/db/models.py).
    delete_run_metrics(session.connection(), run_id)
    gone = session.execute(
        delete(Run).where(Run.id == run_id, Run.status.in_(FINISHED_STATUSES))
    ).rowcount
    if not gone:
        raise Conflict(f"run {run_id} changed state while being deleted; try again")


def send_runs(session: Session, app: Celery, runs: Sequence[Run]) -> None:
    """Send committed runs to the broker, stamping enqueued_at on each one sent.

    Stops at the first broker failure and raises BrokerUnavailable naming the runs left
    unsent; the caller commits either way so the stamps of the sent ones are kept."""
    for i, run in enumerate(runs):
        try:
            send_run(app, run.id, run.queue)
        except BrokerError as exc:
            raise BrokerUnavailable([r.id for r in runs[i:]], exc) from exc
        run.enqueued_at = utcnow()
        session.flush()
