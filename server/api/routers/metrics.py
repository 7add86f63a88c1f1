"""A run's measurements: scalar series, per-eta probe records, histograms, the export."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from server.api import responses
from server.api.deps import INT32_MAX, EngineDep, RunId, SessionDep, StepQuery
from server.schemas import DistributionsOut, KeysOut, MetricsOut, ProbesOut
from server.services import export, metrics
from server.services.runs import get_run
from server.services.views import run_out
from server.text import StoredText

router = APIRouter(prefix="/runs/{run_id}", tags=["metrics"], responses=responses.NOT_FOUND)

METRICS_DOC = """Per key, the steps and values recorded in [since_step, until_step].

**Keys**: a comma-separated list of exact keys (`train/loss,test/acc`) and globs
(`landscape/*`); none means every key (see `/runs/{id}/keys`). An exact key the run has not
recorded yet comes back as an empty series.

**Downsampling**: when the step range spans more than `max_points` steps, the range is cut
into at most `max_points` buckets (at least about half as many) of equal width, computed in
the database: `steps` holds each bucket's midpoint step, `values` its mean, `min`/`max` its
envelope and `counts`/`nonfinite` its points and how many of them were NaN or infinite.
Means and envelopes are over finite values only (null when a bucket has none).
`downsampled` says which form you got.

**Non-finite values** (a diverged run is data) travel as JSON strings in `values`:
`"NaN"`, `"Infinity"` and `"-Infinity"`. Every other entry is a JSON number.
"""


@router.get("/keys")
def list_keys(run_id: RunId, session: SessionDep) -> KeysOut:
    """The metric keys this run has recorded, sorted."""
    return KeysOut(run_id=run_id, keys=metrics.list_keys(session, run_id))


@router.get("/metrics", description=METRICS_DOC)
def read_metrics(
    run_id: RunId,
    session: SessionDep,
    keys: Annotated[StoredText | None,
                    Query(max_length=4000, examples=["train/loss,landscape/*"])] = None,
    since_step: StepQuery = None,
    until_step: StepQuery = None,
    max_points: Annotated[int, Query(ge=1, le=1_000_000)] = 5000,
) -> MetricsOut:
    series = metrics.read_metrics(
        session, run_id, keys, since_step=since_step, until_step=until_step, max_points=max_points
    )
    return MetricsOut(run_id=run_id, series=series)


@router.get("/probes")
def read_probes(
    run_id: RunId,
    session: SessionDep,
    probe: Annotated[StoredText | None, Query(max_length=32)] = None,
    since_step: StepQuery = None,
    every: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=1_000_000)] = 100_000,
) -> ProbesOut:
    """Every step size of the landscape probes: loss and gradient distance per eta (Fig 11).
    Non-finite loss/grad_dist as "NaN", "Infinity", "-Infinity". `every`: only steps that
    are multiples of it (a readable number of Fig 11 lines), plus every non-finite record."""
    records = metrics.probe_records(
        session, run_id, probe=probe, since_step=since_step, every=every, limit=limit
    )
    return ProbesOut(run_id=run_id, records=records)


@router.get("/distributions")
def read_distributions(
    run_id: RunId,
    session: SessionDep,
    layer: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    scope: Literal["layer", "unit"] | None = None,
    since_step: StepQuery = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> DistributionsOut:
    """Activation histograms per normalised layer (and its sampled unit), by step."""
    records = metrics.distributions(
        session, run_id, layer=layer, scope=scope, since_step=since_step, limit=limit
    )
    return DistributionsOut(run_id=run_id, records=records)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}},
                     "description": "csv: run_id,key,step,value; json: {run, series}"}},
)
def export_run(
    run_id: RunId,
    session: SessionDep,
    engine: EngineDep,
    fmt: Annotated[Literal["csv", "json"], Query(alias="format")] = "csv",
) -> StreamingResponse:
    """All scalar points, streamed from the database. csv: run_id,key,step,value, non-finite
    values as nan, inf, -inf (as the CLI's scalars.csv). json: {"run": the run as GET
    /runs/{id} gives it (spec, environment), "series": {key: [[step, value], ...]}},
    non-finite values as "NaN", "Infinity", "-Infinity"."""
    run = get_run(session, run_id)  # a missing run is a 404 before the first byte goes out
    # The name comes from the run id only: no user text in a header.
    headers = {"Content-Disposition": f'attachment; filename="landscope-run-{run_id}.{fmt}"'}
    if fmt == "json":
        doc = run_out(run).model_dump(mode="json")
        return StreamingResponse(export.iter_json(engine, run_id, doc),
                                 media_type="application/json", headers=headers)
    return StreamingResponse(export.iter_csv(engine, run_id), media_type="text/csv",
                             headers=headers)
