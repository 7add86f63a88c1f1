"""/analyses: measure runs' saved networks (surfaces, slices, trajectories, spectra)."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.orm import Session

from server.api import responses
from server.api.deps import INT32_MAX, Authorized, CeleryDep, IdQuery, SessionDep, SettingsDep
from server.api.idempotency import REPLAY_RESPONSES, IdempotencyKey, replay
from server.db.models import Analysis
from server.deadline import waiting_on
from server.schemas import Page
from server.schemas_analyses import (
    AnalysesCreated,
    AnalysisCreate,
    AnalysisDetail,
    AnalysisOut,
    AnalysisStatus,
)
from server.services import analyses
from server.services.admission import claim
from server.services.analysis_views import analysis_csv, analysis_detail, analysis_out
from server.services.errors import InvalidRequest, NotFound

router = APIRouter(prefix="/analyses", tags=["analyses"])
AnalysisId = Annotated[int, Path(ge=1, le=INT32_MAX)]
NOT_FOUND = {404: {**responses.NOT_FOUND[404], "description": "no such analysis"}}


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Authorized],
             responses={**responses.CREATES, **REPLAY_RESPONSES, 200: {
                 "model": AnalysesCreated, "description": "a dry run: the cost only"}})
def create_analyses(
    body: AnalysisCreate, session: SessionDep, settings: SettingsDep, celery: CeleryDep,
    response: Response, idempotency_key: IdempotencyKey = None,
) -> AnalysesCreated:
    """Check (422 at the field: steps outside the run's snapshot schedule, server limits;
    409: a step not saved yet), save one analysis per run, then send them to workers.
    With dry_run: 200 and the estimated cost, nothing saved."""
    rows, cost, created = analyses.create_analyses(
        session, settings, body, claim(idempotency_key, "analyses", body))
    if body.dry_run and not rows:
        response.status_code = status.HTTP_200_OK
        return AnalysesCreated(analyses=[], cost=cost)
    if not created:
        return replay(session, response, AnalysesCreated(
            analyses=[analysis_out(a) for a in rows], cost=cost))
    unsent = _commit_then_send(session, celery, rows)
    answer = AnalysesCreated(analyses=[analysis_out(a) for a in rows], cost=cost)
    if unsent:
        return JSONResponse(  # type: ignore[return-value]
            {"detail": f"the broker cannot be reached: analyses {unsent} were saved and will "
                       "be sent when it is back", "unsent_analysis_ids": unsent,
             **answer.model_dump(mode="json")},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return answer


def _commit_then_send(session: Session, celery: Celery, rows: list[Analysis]) -> list[int]:
    """Commit, send, commit the enqueued_at stamps: no task names an uncommitted analysis."""
    session.commit()
    try:
        with waiting_on("the message broker"):
            return analyses.send_analyses(session, celery, rows)
    finally:
        session.commit()


@router.get("")
def list_analyses(
    session: SessionDep,
    run_id: IdQuery = None,
    experiment_id: IdQuery = None,
    group_id: IdQuery = None,
    status: AnalysisStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
) -> Page[AnalysisOut]:
    """Newest first."""
    rows, total = analyses.list_analyses(
        session, run_id=run_id, experiment_id=experiment_id, group_id=group_id, status=status,
        limit=limit, offset=offset)
    return Page[AnalysisOut](items=[analysis_out(a) for a in rows], total=total, limit=limit,
                             offset=offset)


@router.get("/{analysis_id}", responses=NOT_FOUND)
def get_analysis(analysis_id: AnalysisId, session: SessionDep) -> AnalysisDetail:
    """With its results: per analysed step the axes, the grids (loss[iy][ix]; null where no
    point is stored yet; non-finite as strings) and the named values."""
    return analysis_detail(session, analyses.get_analysis(session, analysis_id))


@router.get("/{analysis_id}/csv", response_class=Response, responses={
    **NOT_FOUND, 200: {"content": {"text/csv": {}},
                       "description": "analysis_id,run_id,step,idx,ix,iy,x,y,loss,acc,"
                                      "test_loss,test_acc"}})
def analysis_csv_export(analysis_id: AnalysisId, session: SessionDep) -> Response:
    """Every stored grid point; non-finite values as nan, inf, -inf; not measured: empty."""
    a = analyses.get_analysis(session, analysis_id)
    return Response(analysis_csv(session, a), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="landscope-analysis-{a.id}.csv"'})


@router.get("/{analysis_id}/directions", response_class=FileResponse, responses={
    **NOT_FOUND, 200: {"content": {"application/octet-stream": {}},
                       "description": "torch.save'd directions (torch.load weights_only)"}})
def analysis_directions(
    analysis_id: AnalysisId, session: SessionDep, settings: SettingsDep,
    step: Annotated[int | None, Query(ge=0, le=INT32_MAX,
                                      description="default: the only step")] = None,
) -> FileResponse:
    """The directions used at a step, to recompute any point independently."""
    a = analyses.get_analysis(session, analysis_id)
    steps = a.spec.get("steps") or []
    if step is None:
        if len(steps) != 1:
            raise InvalidRequest(("query", "step"),
                                          f"this analysis has steps {steps}: name one")
        step = steps[0]
    path = analyses.directions_path(settings, a.id, step)
    if not path.exists():
        raise NotFound(f"directions of analysis {a.id} at step", step)
    return FileResponse(path, media_type="application/octet-stream",
                        filename=f"landscope-analysis-{a.id}-directions-{step}.pt")


@router.post("/{analysis_id}/cancel", dependencies=[Authorized],
             responses={**NOT_FOUND, **responses.UNAUTHORIZED, 409: {
                 **responses.CONFLICT[409], "description": "the analysis has already finished"}})
def cancel_analysis(analysis_id: AnalysisId, session: SessionDep) -> AnalysisOut:
    """Queued or running: cancelled (a worker stops before its next chunk)."""
    a = analyses.cancel_analysis(session, analysis_id)
    session.commit()
    return analysis_out(a)


@router.delete("/{analysis_id}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[Authorized],
               responses={**NOT_FOUND, **responses.UNAUTHORIZED, 409: {
                   **responses.CONFLICT[409], "description": "queued or running: cancel it"}})
def delete_analysis(analysis_id: AnalysisId, session: SessionDep, settings: SettingsDep) -> None:
    """Delete a finished analysis, its points, values and directions files."""
    directory = analyses.delete_analysis(session, settings, analysis_id)
    session.commit()
    analyses.remove_files(directory)  # only once the rows are gone for good
