"""Bodies of the seed-group endpoints (GET /groups, GET /groups/metrics).

Non-finite centres and bands travel as "NaN"/"Infinity"/"-Infinity" strings, as in
/runs/{id}/metrics (server/schemas.py json_float)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from server.schemas import JsonFloat


class GroupOut(BaseModel):
    key: str = Field(description="sha256 (16 hex digits) of source and spec/config without seed")
    label: str = Field(description="normalisation and what else differs between the groups")
    run_ids: list[int]
    seeds: list[int | None] = Field(description="each run's seed, in run_ids' order")


class GroupsOut(BaseModel):
    groups: list[GroupOut]


class GroupSeriesOut(BaseModel):
    """One key of one group, a bucket per entry (the grid is the request's, shared)."""

    key: str
    steps: list[float] = Field(description="each bucket's middle step (its points' middle)")
    center: list[JsonFloat | None] = Field(description="median or mean of the runs' values")
    lo: list[JsonFloat | None] = Field(description="min, or mean - std, of the runs' values")
    hi: list[JsonFloat | None] = Field(description="max, or mean + std")
    n: list[int] = Field(description="runs with a finite value in the bucket")
    nonfinite: list[int] = Field(description="runs whose points in the bucket were all "
                                 "NaN or infinite")


class GroupMetricsOut(BaseModel):
    run_ids: list[int]
    series: list[GroupSeriesOut]


class GroupedMetricsOut(BaseModel):
    groups: list[GroupMetricsOut]
