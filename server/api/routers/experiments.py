"""/experiments: a base spec (or preset) times the values to vary, as runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from server.api import responses
from server.api.deps import (
    INT32_MAX,
    Authorized,
    CeleryDep,
    ExperimentId,
    SessionDep,
    SettingsDep,
)
from server.api.enqueue import commit_then_enqueue
from server.api.idempotency import REPLAY_RESPONSES, IdempotencyKey, replay
from server.schemas import ExperimentCreate, ExperimentDetail, ExperimentOut, Page
from server.schemas_cost import ExperimentCostOut
from server.services import experiments
from server.services.admission import claim
from server.services.system import served_queues
from server.services.views import experiment_detail, experiment_out

router = APIRouter(prefix="/experiments", tags=["experiments"])


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Authorized],
             responses={**responses.CREATES, **REPLAY_RESPONSES})
def create_experiment(
    body: ExperimentCreate, session: SessionDep, settings: SettingsDep, celery: CeleryDep,
    response: Response, idempotency_key: IdempotencyKey = None,
) -> ExperimentDetail:
    """One run per combination of `vary`, all sharing seed and data order unless `seed` is
    varied. 422 names the bad field (["body", "vary"] when the product is over the server's
    limit); 429 when the queue is full; 503 when the broker is down (runs saved, sent later).
    With an Idempotency-Key seen before, the experiment that key created (header
    Idempotent-Replayed)."""
    idem = claim(idempotency_key, "experiments", body)
    exp, created = experiments.create_experiment(session, settings, body, idem)
    if not created:
        return replay(session, response, experiment_detail(exp, served_queues(session, settings)))
    commit_then_enqueue(session, celery, exp.runs)
    return experiment_detail(exp, served_queues(session, settings))


# Open like the GETs (no token): it saves nothing, and the form asks it as the user types.
@router.post("/cost")
def experiment_cost(body: ExperimentCreate, session: SessionDep,
                    settings: SettingsDep) -> ExperimentCostOut:
    """The dry run of POST /experiments: the same body, checked the same way (the same 422s),
    nothing saved. Per run and in total: training (training-step units and seconds), the
    analyses the experiment will run on each run once it succeeds (forward passes, backward
    passes, Hessian-vector products, seconds) and the disk its snapshots take. Seconds are an
    order of magnitude at an assumed rate per device (server/experiment_cost.py)."""
    return ExperimentCostOut(**experiments.experiment_cost(session, settings, body))


@router.get("")
def list_experiments(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
) -> Page[ExperimentOut]:
    """Newest first, each with its runs counted by status."""
    rows, total = experiments.list_experiments(session, limit=limit, offset=offset)
    counts = experiments.status_counts(session, [e.id for e in rows])
    items = [experiment_out(e, counts[e.id]) for e in rows]
    return Page[ExperimentOut](items=items, total=total, limit=limit, offset=offset)


@router.get("/{experiment_id}", responses=responses.NOT_FOUND)
def get_experiment(
    experiment_id: ExperimentId, session: SessionDep, settings: SettingsDep
) -> ExperimentDetail:
    exp = experiments.get_experiment(session, experiment_id)
    return experiment_detail(exp, served_queues(session, settings))
