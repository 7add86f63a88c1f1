"""The /analyses request and response bodies (pydantic; no FastAPI, no torch).

Grids are row-major: `loss[iy][ix]` is the point (x[ix], y[iy]); a slice has one row. A point
not stored yet is null; a non-finite value is the string "NaN", "Infinity" or "-Infinity", as
everywhere in this API (server/schemas.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.analysis_spec import AnalysisSpec
from server.schemas import JsonFloat

INT32_MAX = 2**31 - 1
AnalysisStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Grid = list[list[JsonFloat | None]]


class AnalysisCreate(BaseModel):
    """Analyse one run, or every run of an experiment with the same spec (and so the same
    direction seed): one analysis per run, all sharing one group_id."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"experiment_id": 1, "spec": {"kind": "surface", "x": {"points": 21}}},
            {"run_id": 3, "spec": {"kind": "spectrum"}, "dry_run": True},
        ]},
    )

    run_id: int | None = Field(None, ge=1, le=INT32_MAX)
    experiment_id: int | None = Field(None, ge=1, le=INT32_MAX)
    spec: AnalysisSpec = Field(default_factory=AnalysisSpec)
    dry_run: bool = Field(False, description="only estimate the cost; nothing is created")

    @model_validator(mode="after")
    def _one_target(self) -> AnalysisCreate:
        if (self.run_id is None) == (self.experiment_id is None):
            raise ValueError("give either run_id or experiment_id")
        return self


class Progress(BaseModel):
    done: int = Field(description="grid points stored")
    total: int = Field(description="grid points asked for, all steps together")


class AnalysisOut(BaseModel):
    id: int
    run_id: int
    experiment_id: int | None
    group_id: int = Field(description="the analyses created by one request share it")
    kind: str
    bn_mode: str
    spec: dict[str, Any] = Field(description="the analysis spec, steps resolved")
    status: AnalysisStatus
    progress: Progress
    error: str | None
    cost: dict[str, Any] | None
    worker: str | None
    created_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class AnalysisStep(BaseModel):
    x: list[float] | None = Field(description="first axis; null for a spectrum")
    y: list[float] | None = Field(description="second axis; null for a slice or a spectrum")
    loss: Grid | None = Field(description="ny rows of nx; null for a spectrum")
    acc: Grid | None = Field(description="null when the loss is not a classification's")
    test_loss: Grid | None = Field(description="null unless the spec asked for the test set")
    test_acc: Grid | None
    values: dict[str, Any] = Field(
        description="non-grid results by name: spectrum, trajectory, directions, endpoints"
    )
    environments: list[dict[str, Any]] = Field(
        default_factory=list,
        description="each distinct environment this step was computed in (threads, "
        "determinism, precision, device, versions: what its numbers depend on besides the "
        "spec), the preparing worker's and every chunk's; empty for an analysis stored "
        "before they were recorded",
    )


class AnalysisDetail(AnalysisOut):
    steps: dict[str, AnalysisStep] = Field(description="by analysed step")


class AnalysesCreated(BaseModel):
    analyses: list[AnalysisOut] = Field(description="empty for a dry run")
    cost: dict[str, Any] = Field(
        description="all the analyses together: passes over the evaluation set (forward, "
        "backward, HVPs, forward equivalents) summed, memory and parameters at most"
    )
