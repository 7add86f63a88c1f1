"""/experiments: a base spec (or preset) times the values to vary, as runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from server.api import responses
from server.api.annotation_params import TagPath, TagQuery
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
from server.db.models import Experiment
from server.schemas import ExperimentCreate, ExperimentDetail, ExperimentOut, Page
from server.schemas_annotations import AnnotationPatch
from server.schemas_cost import ExperimentCostOut
from server.services import annotations, experiments
from server.services.admission import claim
from server.services.analyses import remove_files, run_files
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
@router.post("/cost", responses=responses.BODY)
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
    tag: TagQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
) -> Page[ExperimentOut]:
    """Newest first, each with its runs counted by status; `tag` repeated: those with every
    one."""
    rows, total = experiments.list_experiments(session, limit=limit, offset=offset,
                                               tags=tuple(tag or ()))
    counts = experiments.status_counts(session, [e.id for e in rows])
    items = [experiment_out(e, counts[e.id]) for e in rows]
    return Page[ExperimentOut](items=items, total=total, limit=limit, offset=offset)


@router.get("/{experiment_id}", responses=responses.NOT_FOUND)
def get_experiment(
    experiment_id: ExperimentId, session: SessionDep, settings: SettingsDep
) -> ExperimentDetail:
    exp = experiments.get_experiment(session, experiment_id)
    return experiment_detail(exp, served_queues(session, settings))


@router.delete(
    "/{experiment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Authorized],
    responses={**responses.NOT_FOUND, **responses.UNAUTHORIZED,
               409: {**responses.CONFLICT[409],
                     "description": "a run is queued or running: cancel it first"}},
)
def delete_experiment(experiment_id: ExperimentId, session: SessionDep,
                      settings: SettingsDep) -> None:
    """Delete an experiment with all its runs and their metrics, snapshots and analyses."""
    _ids, files = experiments.delete_experiment(
        session, experiment_id, lambda run_id: run_files(session, settings, run_id))
    session.commit()
    remove_files(*files)  # only once the rows are gone for good


ANNOTATE = {**responses.NOT_FOUND, **responses.UNAUTHORIZED}
PATCHES = {**ANNOTATE, **{c: responses.CREATES[c] for c in (400, 413)}}


def _out(session, exp: Experiment) -> ExperimentOut:
    return experiment_out(exp, experiments.status_counts(session, [exp.id])[exp.id])


@router.patch("/{experiment_id}", dependencies=[Authorized], responses=PATCHES)
def annotate_experiment(experiment_id: ExperimentId, body: AnnotationPatch,
                        session: SessionDep) -> ExperimentOut:
    """Set the experiment's tags (the whole set) and/or note; fields left out stay. Its
    runs' own tags are theirs: unchanged."""
    exp = annotations.annotate(session, Experiment, experiment_id, body.changes())
    session.commit()
    return _out(session, exp)


@router.post("/{experiment_id}/tags/{tag}", dependencies=[Authorized], responses=ANNOTATE)
def add_experiment_tag(experiment_id: ExperimentId, tag: TagPath,
                       session: SessionDep) -> ExperimentOut:
    """Add one tag (already there: nothing changes). 422 past 32 tags."""
    exp = annotations.add_tag(session, Experiment, experiment_id, tag)
    session.commit()
    return _out(session, exp)


@router.delete("/{experiment_id}/tags/{tag}", dependencies=[Authorized], responses=ANNOTATE)
def remove_experiment_tag(experiment_id: ExperimentId, tag: TagPath,
                          session: SessionDep) -> ExperimentOut:
    """Remove one tag (not there: nothing changes)."""
    exp = annotations.remove_tag(session, Experiment, experiment_id, tag)
    session.commit()
    return _out(session, exp)
