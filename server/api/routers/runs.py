"""/runs: submit one run, list (filtered), read, tag and annotate, cancel, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from server.api import responses
from server.api.annotation_params import SpecValue, TagPath, TagQuery
from server.api.deps import (
    INT32_MAX,
    Authorized,
    CeleryDep,
    IdQuery,
    RunId,
    SessionDep,
    SettingsDep,
)
from server.api.enqueue import commit_then_enqueue
from server.api.idempotency import REPLAY_RESPONSES, IdempotencyKey, replay
from server.db.models import Run
from server.schemas import Page, RunCreate, RunOut, RunStatus, Source
from server.schemas_annotations import AnnotationPatch
from server.services import annotations, runs
from server.services.admission import claim
from server.services.analyses import remove_files, run_files
from server.services.run_filters import RunFilters
from server.services.system import served_queues
from server.services.views import run_out
from server.text import StoredText

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Authorized],
             responses={**responses.CREATES, **REPLAY_RESPONSES})
def create_run(
    body: RunCreate, session: SessionDep, settings: SettingsDep, celery: CeleryDep,
    response: Response, idempotency_key: IdempotencyKey = None,
) -> RunOut:
    """Validate, save, then send to a worker. 422 names the bad field; 429 when the queue is
    full; 503 when the broker is down (the run is saved and sent once it is back). With an
    Idempotency-Key seen before, the run that key created (header Idempotent-Replayed)."""
    run, created = runs.create_run(session, settings, body, claim(idempotency_key, "runs", body))
    if not created:
        return replay(session, response, run_out(run, served=served_queues(session, settings)))
    commit_then_enqueue(session, celery, [run])
    return run_out(run, served=served_queues(session, settings))


@router.get("")
def list_runs(
    session: SessionDep,
    settings: SettingsDep,
    status: RunStatus | None = None,
    experiment_id: IdQuery = None,
    name: Annotated[StoredText | None,
                    Query(max_length=200, description="substring, any case")] = None,
    source: Source | None = None,
    norm: SpecValue = None,
    model: SpecValue = None,
    dataset: SpecValue = None,
    tag: TagQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
) -> Page[RunOut]:
    """Newest first. Filters combine (all must hold): norm, model and dataset match the
    spec's field (an SDK run's config's top-level key); `tag` repeated: runs with every one."""
    filters = RunFilters(status=status, experiment_id=experiment_id, name=name, source=source,
                         norm=norm, model=model, dataset=dataset, tags=tuple(tag or ()))
    rows, total = runs.list_runs(session, filters=filters, limit=limit, offset=offset)
    queues = served_queues(session, settings)  # one query for the page
    return Page[RunOut](items=[run_out(r, served=queues) for r in rows], total=total,
                        limit=limit, offset=offset)


@router.get("/{run_id}", responses=responses.NOT_FOUND)
def get_run(run_id: RunId, session: SessionDep, settings: SettingsDep) -> RunOut:
    return run_out(runs.get_run(session, run_id), served=served_queues(session, settings))


@router.post(
    "/{run_id}/cancel",
    dependencies=[Authorized],
    responses={202: {"description": "running: the worker stops it at its next step"},
               **responses.NOT_FOUND, **responses.UNAUTHORIZED,
               409: {**responses.CONFLICT[409], "description": "the run has already finished"}},
)
def cancel_run(run_id: RunId, session: SessionDep, response: Response) -> RunOut:
    """A queued run is cancelled at once (200); a running one is asked to stop (202) and its
    worker writes `cancelled` when it does."""
    run = runs.cancel_run(session, run_id)
    session.commit()
    if run.status == "running":
        response.status_code = status.HTTP_202_ACCEPTED
    return run_out(run)  # no longer queued: it waits for no worker


@router.delete(
    "/{run_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Authorized],
    responses={**responses.NOT_FOUND, **responses.UNAUTHORIZED,
               409: {**responses.CONFLICT[409],
                     "description": "queued or running: cancel it first"}},
)
def delete_run(run_id: RunId, session: SessionDep, settings: SettingsDep) -> None:
    """Delete a finished run and all its metrics, snapshots and analyses."""
    files = run_files(session, settings, run_id)
    runs.delete_run(session, run_id)
    session.commit()
    remove_files(*files)  # only once the rows are gone for good


ANNOTATE = {**responses.NOT_FOUND, **responses.UNAUTHORIZED}
PATCHES = {**ANNOTATE, **{c: responses.CREATES[c] for c in (400, 413)}}


@router.patch("/{run_id}", dependencies=[Authorized], responses=PATCHES)
def annotate_run(run_id: RunId, body: AnnotationPatch, session: SessionDep,
                 settings: SettingsDep) -> RunOut:
    """Set the run's tags (the whole set) and/or note, at any status; fields left out stay."""
    run = annotations.annotate(session, Run, run_id, body.changes())
    session.commit()
    return run_out(run, served=served_queues(session, settings))


@router.post("/{run_id}/tags/{tag}", dependencies=[Authorized], responses=ANNOTATE)
def add_run_tag(run_id: RunId, tag: TagPath, session: SessionDep,
                settings: SettingsDep) -> RunOut:
    """Add one tag (already there: nothing changes). 422 past 32 tags."""
    run = annotations.add_tag(session, Run, run_id, tag)
    session.commit()
    return run_out(run, served=served_queues(session, settings))


@router.delete("/{run_id}/tags/{tag}", dependencies=[Authorized], responses=ANNOTATE)
def remove_run_tag(run_id: RunId, tag: TagPath, session: SessionDep,
                   settings: SettingsDep) -> RunOut:
    """Remove one tag (not there: nothing changes)."""
    run = annotations.remove_tag(session, Run, run_id, tag)
    session.commit()
    return run_out(run, served=served_queues(session, settings))
