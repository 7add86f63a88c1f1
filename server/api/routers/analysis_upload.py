"""POST /runs/{id}/analyses/upload: an analysis computed by the SDK (landscope.analyse), stored
complete, so that GET /analyses/{id} and the Landscape tab show it like a worker's."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from server.api import responses
from server.api.deps import Authorized, RunId, SessionDep
from server.api.idempotency import REPLAY_RESPONSES, IdempotencyKey, replay
from server.schemas_analyses import AnalysisOut
from server.schemas_analysis_upload import AnalysisUpload
from server.services.admission import claim
from server.services.analysis_upload import store_upload
from server.services.analysis_views import analysis_out

router = APIRouter(tags=["analyses"], dependencies=[Authorized])


@router.post("/runs/{run_id}/analyses/upload", status_code=status.HTTP_201_CREATED,
             responses={**responses.NOT_FOUND, **responses.UNAUTHORIZED, **REPLAY_RESPONSES,
                        400: responses.CREATES[400], 413: responses.CREATES[413],
                        409: {**responses.CONFLICT[409], "description": "a run trained by a "
                              "worker (its analyses come from its snapshots), or what the "
                              "Idempotency-Key stored has since been deleted"}})
def upload_analysis(run_id: RunId, body: AnalysisUpload, session: SessionDep,
                    response: Response, idempotency_key: IdempotencyKey = None) -> AnalysisOut:
    """Store a finished analysis of an SDK run, with every grid point and value (422 at the
    field: steps other than spec.steps, columns of unequal length, indices off the grid).
    A retry with the same Idempotency-Key answers with the analysis stored the first time."""
    row, created = store_upload(session, run_id, body,
                                claim(idempotency_key, "analyses/upload", body))
    if not created:
        return replay(session, response, analysis_out(row))
    session.commit()
    return analysis_out(row)
