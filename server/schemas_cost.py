"""The answer of POST /experiments/cost (server/experiment_cost.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ExperimentCostOut(BaseModel):
    runs: list[dict[str, Any]] = Field(description=(
        "per run, in launch order: name, device_assumed, training {steps, cost_steps (training-"
        "step units), forward_equivalents, seconds}, analyses [per default analysis: kind, "
        "steps, forward_passes, backward_passes, hvps, forward_equivalents (passes over its "
        "evaluation set), seconds], snapshots {count, bytes_per_file, bytes}, seconds; null "
        "where a plug-in model or dataset leaves it unknown"))
    total: dict[str, Any] = Field(description=(
        "runs, training_cost_steps, training_seconds, analyses, analysis_forward_passes, "
        "analysis_backward_passes, analysis_hvps, analysis_seconds, snapshots, "
        "snapshot_bytes, seconds"))
