"""The body of POST /runs/{id}/analyses/upload: an analysis the SDK computed in-process
(landscope.analyse), complete, with its values (pydantic; no FastAPI, no torch).

Points are columnar per step (one list per column, flat grid indices in `idx`), so that a
101 x 101 surface is a few lists rather than ten thousand objects. Non-finite values are the
strings "NaN", "Infinity", "-Infinity", as everywhere in this API (a JSON NaN literal is read
too); acc, test_loss, test_acc are null, or lists with null where not measured.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.analysis_spec import AnalysisSpec

MAX_VALUE_NAME = 64  # analysis_values.name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UploadedStep(_Strict):
    idx: list[int] = Field(default_factory=list, description="flat grid indices (row-major)")
    loss: list[float] = Field(default_factory=list)
    acc: list[float | None] | None = None
    test_loss: list[float | None] | None = None
    test_acc: list[float | None] | None = None
    values: dict[str, Any] = Field(
        default_factory=dict, description="named non-grid results (meta, directions, spectrum)")


class AnalysisUpload(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "spec": {"kind": "slice", "steps": [100], "x": {"lo": -1, "hi": 1, "points": 3}},
            "steps": {"100": {"idx": [0, 1, 2], "loss": [2.5, 0.3, "NaN"],
                              "values": {"meta": {"source": "sdk"}}}},
        }]},
    )

    spec: AnalysisSpec = Field(description="what was measured; `steps` names the analysed steps")
    steps: dict[str, UploadedStep] = Field(
        description="per analysed step (its number as a string): the grid and the values")
