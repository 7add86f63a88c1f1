"""/groups: runs that differ only in their seed, and their metrics as one line with a band."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from server.api import responses
from server.api.deps import IdQuery, SessionDep, StepQuery
from server.schemas_groups import GroupedMetricsOut, GroupOut, GroupsOut
from server.services import grouped_metrics, groups
from server.text import StoredText

router = APIRouter(prefix="/groups", tags=["groups"], responses=responses.NOT_FOUND)

IdList = Annotated[StoredText, Field(max_length=4000)]

GROUPED_DOC = """Each `group` (a comma-separated list of run ids; repeat the parameter for
more groups) drawn as one line with a band, per key (`keys`: exact keys and globs, as
`/runs/{id}/metrics`; none means every key of any run).

**Grid**: one bucket grid for every group and key of the request, from the union of their
step ranges: a bucket per step when the range spans at most `max_points` steps, else equal
buckets (as `/runs/{id}/metrics`); `steps` holds each bucket's middle step.

**Per bucket**: a run's value is the mean of its finite points in the bucket. Across the
group's runs, `center` is their median (the mean of the middle two for an even count) or mean,
`lo`/`hi` their min and max (`band=minmax`) or the mean -/+ the population standard deviation
(`band=std`); null where no run has a finite value. `n` counts runs with a finite value,
`nonfinite` runs whose points in the bucket were all NaN or infinite. Buckets where no run
of the group has a point are left out. Non-finite numbers as "NaN", "Infinity", "-Infinity".
"""


@router.get("")
def list_groups(
    session: SessionDep,
    runs: Annotated[IdList | None, Query(examples=["1,2,3"])] = None,
    experiment_id: IdQuery = None,
) -> GroupsOut:
    """The seed groups of these runs (`runs=1,2,3`) or of an experiment's runs: runs with the
    same source and spec (SDK runs: config) but for the seed. Groups and their runs in the
    order of first appearance; `label` says what tells the groups apart, never the seed."""
    found = groups.groups_of(session, runs=runs, experiment_id=experiment_id)
    return GroupsOut(groups=[GroupOut(key=g.key, label=label, run_ids=g.run_ids,
                                      seeds=g.seeds) for g, label in found])


@router.get("/metrics", description=GROUPED_DOC)
def read_grouped_metrics(
    session: SessionDep,
    group: Annotated[list[IdList], Query(min_length=1, max_length=grouped_metrics.MAX_GROUPS,
                                         examples=[["1,2,3", "4,5,6"]])],
    keys: Annotated[StoredText | None,
                    Query(max_length=4000, examples=["train/loss,landscape/*"])] = None,
    center: Literal["median", "mean"] = "median",
    band: Literal["minmax", "std"] = "minmax",
    max_points: Annotated[int, Query(ge=1, le=10_000)] = 300,
    since_step: StepQuery = None,
    until_step: StepQuery = None,
) -> GroupedMetricsOut:
    return grouped_metrics.grouped_metrics(
        session, group, keys, center=center, band=band, max_points=max_points,
        since_step=since_step, until_step=until_step)
