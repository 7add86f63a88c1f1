"""The SDK's endpoints: create a run for a user's own loop, take its metric batches, finish it.

Server side of landscope.init / Run.log / Run.finish (landscope/sdk). Batches arrive JSON,
usually gzipped; the ingest route's body limit is LANDSCOPE_MAX_INGEST_MB (body_limit.py),
before and after decompression.
"""

from __future__ import annotations

import random
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response, status
from sqlalchemy.exc import IntegrityError, OperationalError

from server.api import responses
from server.api.deps import Authorized, RunId, SessionDep, SettingsDep
from server.schemas import RunOut
from server.schemas_sdk import IngestBatchDoc, IngestOut, SdkRunCreate, SdkRunFinish
from server.services import ingest, sdk_runs
from server.services.errors import NotFound
from server.services.views import run_out

router = APIRouter(tags=["sdk"], dependencies=[Authorized])

SDK_RUN = {**responses.NOT_FOUND, **responses.UNAUTHORIZED, 409: {
    **responses.CONFLICT[409], "description": "a run trained by a worker (not an SDK run), or "
    "(finish) one that already finished with another status"}}


@router.post("/sdk/runs", status_code=status.HTTP_201_CREATED,
             responses={200: {"model": RunOut, "description": "a run with this client_id "
                                                            "exists: that run, unchanged"},
                        **{c: d for c, d in responses.CREATES.items() if c != 429}})
def create_sdk_run(body: SdkRunCreate, session: SessionDep, response: Response) -> RunOut:
    """A run trained by the caller's own loop: `running` from now on, kept so by its
    heartbeats (crashed when they stop). Never sent to a worker."""
    run, created = sdk_runs.create_sdk_run(session, body)
    if created:
        session.commit()
    else:
        session.rollback()  # nothing written; ends the transaction (and its lock) now
        response.status_code = status.HTTP_200_OK
    return run_out(run)


async def _raw_body(request: Request) -> bytes:
    return await request.body()


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its $defs inlined, to sit inside /openapi.json."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


INGEST_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": _inline(IngestBatchDoc.model_json_schema())}}}}
INGEST_ERRORS = {
    **SDK_RUN,
    400: responses.CREATES[400] | {"description": "the body is not JSON, or not valid gzip"},
    413: {"model": responses.ErrorOut, "description": "the body is larger than "
          "LANDSCOPE_MAX_INGEST_MB, sent or once decompressed"},
    415: {"model": responses.ErrorOut, "description": "a Content-Encoding other than gzip"},
}


ROLLBACK_RETRIES = 5  # attempts at a batch the database rolled back (deadlock, serialization)


def _rolled_back(exc: OperationalError) -> bool:
    """A transaction the database rolled back to resolve a conflict (SQLSTATE class 40:
    deadlock detected, serialization failure): trying again can succeed."""
    return str(getattr(exc.orig, "sqlstate", "") or "").startswith("40")


@router.post("/runs/{run_id}/ingest", openapi_extra=INGEST_BODY, responses=INGEST_ERRORS)
def ingest_batch(
    run_id: RunId, session: SessionDep, settings: SettingsDep,
    body: Annotated[bytes, Depends(_raw_body)],
    content_encoding: Annotated[str | None, Header(max_length=100)] = None,
) -> IngestOut:
    """Store a batch of an SDK run's metrics (scalars, per-eta probe records, histograms) and
    its heartbeat. Insert-ignore per (run, key, step): a batch sent again changes nothing.
    A finished run still takes batches (a spool drained after the end) and keeps its status;
    a heartbeat revives a crashed one."""
    limit = int(settings.max_ingest_mb * 2**20)
    try:
        batch = ingest.parse_batch(ingest.decode_body(body, content_encoding, limit))
    except ingest.BodyRejected as exc:
        raise HTTPException(exc.status, exc.detail) from None
    for attempt in range(1, ROLLBACK_RETRIES + 1):
        run = sdk_runs.sdk_run(session, run_id, lock=True)
        try:
            ingest.store(session, run_id, batch)
            if batch.heartbeat is not None:
                sdk_runs.beat(session, run, batch.heartbeat)
            session.commit()
            break
        except IntegrityError:  # SQLite: the run was deleted between the read and the write
            session.rollback()
            raise NotFound("run", run_id) from None
        except OperationalError as exc:
            # Concurrent batches of one run upsert the same rollup buckets, in an order the
            # database picks: PostgreSQL may find a deadlock and roll one of them back. The
            # batch is insert-ignore, so it is simply written again (it used to be a 503).
            if not _rolled_back(exc) or attempt == ROLLBACK_RETRIES:
                raise
            session.rollback()
            time.sleep(random.uniform(0.005, 0.05) * attempt)
    return IngestOut(points=batch.points, etas=len(batch.etas),
                     distributions=len(batch.distributions), status=run.status,
                     cancel_requested=run.cancel_requested)


@router.post("/runs/{run_id}/finish", responses={
    **SDK_RUN, **{c: responses.CREATES[c] for c in (400, 413)}})
def finish_sdk_run(run_id: RunId, body: SdkRunFinish, session: SessionDep) -> RunOut:
    """The loop's end: succeeded, failed (with its error), or cancelled. Finishing again
    with the same status is a no-op; a crashed run can still finish."""
    run = sdk_runs.finish(session, run_id, body)
    session.commit()
    return run_out(run)
