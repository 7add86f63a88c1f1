"""The REST API's request and response bodies (pydantic; no FastAPI, no torch).

Non-finite numbers: JSON has no literal for them, so every float that may be NaN or infinite
(metric values, losses, probe records) is sent as the string "NaN", "Infinity" or "-Infinity"
(the spellings JavaScript's Number() and Python's float() both read). `json_float` does it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

RunStatus = Literal["queued", "running", "succeeded", "failed", "diverged", "cancelled"]
JsonFloat = float | Literal["NaN", "Infinity", "-Infinity"]
T = TypeVar("T")


def json_float(v: float | None) -> float | str | None:
    """A float as JSON can carry it: finite as is, the rest as "NaN"/"Infinity"/"-Infinity"."""
    if v is None or math.isfinite(v):
        return v
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ---------------------------------------------------------------------------------


class ExperimentCreate(_Request):
    """A base spec (or a preset) and the values to vary: one run per combination."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "bn vs plain", "preset": "quick-mlp",
                 "base": {"steps": 400, "probes.landscape.every": 10},
                 "vary": {"norm": ["none", "batch"], "lr": [0.1, 0.5]}},
            ]
        },
    )

    name: str | None = Field(None, min_length=1, max_length=200, description="default: preset")
    preset: str | None = Field(None, description="start from this preset's base and vary")
    base: dict[str, Any] = Field(
        default_factory=dict,
        description="spec fields, nested or dotted ('probes.landscape.every'), applied over "
        "the preset's base (or over the spec defaults)",
    )
    vary: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="key -> values; the cross product becomes the runs. Keys replace the "
        "preset's own vary keys of the same name",
    )


class RunCreate(_Request):
    """One run: a spec, or a preset's base; `overrides` (dotted keys) apply on top of either."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"preset": "quick-mlp", "overrides": {"norm": "batch"}}]},
    )

    name: str | None = Field(None, min_length=1, max_length=200, description="default: a hint")
    spec: dict[str, Any] | None = Field(None, description="run spec fields (defaults fill in)")
    preset: str | None = Field(None, description="use this preset's base (its vary is not used)")
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> RunCreate:
        if self.spec is not None and self.preset is not None:
            raise ValueError("give either spec or preset, not both")
        return self


# -- responses --------------------------------------------------------------------------------


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="matching rows in all pages")
    limit: int
    offset: int


class RunOut(BaseModel):
    id: int
    experiment_id: int | None
    name: str
    spec: dict[str, Any]
    status: RunStatus
    queue: str
    step: int = Field(description="steps done so far")
    total: int = Field(description="steps asked for")
    progress: float = Field(ge=0, le=1)
    eta_seconds: float | None = Field(description="while running: from the step rate so far")
    last_loss: JsonFloat | None = Field(description="null before the first step")
    diverged_at: int | None
    worker: str | None
    device: str | None
    error: str | None
    attempts: int
    cancel_requested: bool
    probe_cost: dict[str, float] | None = Field(
        description="extra passes per step by probe, and `floor`: the least slowdown"
    )
    created_at: datetime
    enqueued_at: datetime | None = Field(description="null: saved but not yet sent to a worker")
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class ExperimentOut(BaseModel):
    id: int
    name: str
    preset: str | None
    base_spec: dict[str, Any]
    vary: dict[str, Any]
    created_at: datetime
    status_counts: dict[str, int] = Field(description="runs by status")


class ExperimentDetail(ExperimentOut):
    runs: list[RunOut]


class PresetOut(BaseModel):
    name: str
    figures: str = Field(description="the paper's figures it reproduces")
    description: str
    base: dict[str, Any]
    vary: dict[str, list[Any]]
    runs: int = Field(description="size of the cross product")


class ComponentHealth(BaseModel):
    ok: bool
    error: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    database: ComponentHealth
    broker: ComponentHealth


class WorkerOut(BaseModel):
    name: str
    hostname: str
    pid: int
    device: str
    queues: list[Any]
    info: dict[str, Any] | None
    current_run_id: int | None
    started_at: datetime
    last_seen: datetime
    online: bool


class KeysOut(BaseModel):
    run_id: int
    keys: list[str]


class SeriesOut(BaseModel):
    """One key. Raw: steps and values. Downsampled: one entry per bucket of steps; `steps`
    holds each bucket's mean step, `values` its mean over finite points (null when it has
    none), `min`/`max` its finite envelope, `counts` its points and `nonfinite` how many of
    them were NaN or infinite."""

    key: str
    downsampled: bool
    steps: list[int | float]
    values: list[JsonFloat | None]
    min: list[float | None] | None = None
    max: list[float | None] | None = None
    counts: list[int] | None = None
    nonfinite: list[int] | None = None


class MetricsOut(BaseModel):
    run_id: int
    series: dict[str, SeriesOut]


class ProbeRecordOut(BaseModel):
    probe: str
    step: int
    multiplier: float
    eta: float
    loss: JsonFloat
    grad_dist: JsonFloat


class ProbesOut(BaseModel):
    run_id: int
    records: list[ProbeRecordOut]


class DistributionOut(BaseModel):
    layer: int
    scope: Literal["layer", "unit"]
    step: int
    unit: int | None
    lo: float
    hi: float
    counts: list[int]
    underflow: int
    overflow: int
    nonfinite: int
    stats: dict[str, Any] = Field(description="mean, var, quantiles; non-finite as strings")


class DistributionsOut(BaseModel):
    run_id: int
    records: list[DistributionOut]
