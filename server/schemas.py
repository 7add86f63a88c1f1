"""The REST API's request and response bodies (pydantic; no FastAPI, no torch).

Non-finite numbers: JSON has no literal for them, so every float that may be NaN or infinite
(metric values, losses, probe records) is sent as the string "NaN", "Infinity" or "-Infinity"
(the spellings JavaScript's Number() and Python's float() both read). `json_float` does it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from server.analysis_spec import AnalysisSpec
from server.text import StoredText, check_text

RunStatus = Literal["queued", "running", "succeeded", "failed", "diverged", "cancelled",
                    "crashed"]
Source = Literal["service", "sdk"]
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


# Bounds on a request's free-form parts (what lies inside them is bounded by
# server/services/specs.py `reject_oversized`, and each spec field by its own range).
MAX_SPEC_KEYS = 64  # base, overrides, spec (a whole spec, flattened, has 43 keys)
MAX_VARY_KEYS = 16
MAX_VARY_VALUES = 64  # per key: the default LANDSCOPE_MAX_RUNS_PER_EXPERIMENT
MAX_KEY_CHARS = 100
MAX_PRESET_CHARS = 64
MAX_AUTO_ANALYSES = 16  # analyses an experiment runs on each run once it succeeds
SpecKey = Annotated[str, Field(max_length=MAX_KEY_CHARS)]
# The length first: a constraint after StoredText's validator would speak of "items".
PresetName = Annotated[str, Field(max_length=MAX_PRESET_CHARS), AfterValidator(check_text)]
SpecParts = Annotated[dict[SpecKey, Any], Field(max_length=MAX_SPEC_KEYS)]
VaryValues = Annotated[list[Any], Field(min_length=1, max_length=MAX_VARY_VALUES)]


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

    name: StoredText | None = Field(
        None, min_length=1, max_length=200, description="default: preset"
    )
    preset: PresetName | None = Field(None, description="start from this preset's base and vary")
    base: SpecParts = Field(
        default_factory=dict,
        description="spec fields, nested or dotted ('probes.landscape.every'), applied over "
        "the preset's base (or over the spec defaults)",
    )
    vary: dict[SpecKey, VaryValues] = Field(
        default_factory=dict,
        max_length=MAX_VARY_KEYS,
        description="key -> values; the cross product becomes the runs. Keys replace the "
        "preset's own vary keys of the same name",
    )
    analyses: list[AnalysisSpec] | None = Field(
        None, max_length=MAX_AUTO_ANALYSES,
        description="analyses a worker runs on each run as soon as it succeeds (steps: null "
        "= the last step, else steps in every run's snapshot schedule); null: the preset's "
        "(paired presets: an end-of-training surface and spectrum), [] none",
    )


class RunCreate(_Request):
    """One run: a spec, or a preset's base; `overrides` (dotted keys) apply on top of either."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"preset": "quick-mlp", "overrides": {"norm": "batch"}}]},
    )

    name: StoredText | None = Field(
        None, min_length=1, max_length=200, description="default: a hint"
    )
    spec: SpecParts | None = Field(None, description="run spec fields (defaults fill in)")
    preset: PresetName | None = Field(
        None, description="use this preset's base (its vary is not used)"
    )
    overrides: SpecParts = Field(default_factory=dict)

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
    source: Source = Field(
        "service", description="service: trained by a worker from `spec`; sdk: by the "
        "user's own loop (landscope.init), `spec` {} and `config` its own settings")
    config: dict[str, Any] | None = Field(None, description="sdk runs: the loop's config")
    spec: dict[str, Any]
    status: RunStatus
    queue: str
    step: int = Field(description="steps done so far")
    total: int = Field(description="steps asked for (sdk runs: planned; 0 when not known)")
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
    waiting_for: str | None = Field(
        None, description="queued while no online worker consumes its queue: who it waits "
        "for ('a cuda worker', 'a cpu worker', 'a worker'); null otherwise"
    )
    tags: list[str] = Field(default_factory=list, description="the user's tags, sorted")
    note: str | None = Field(None, description="the user's note")
    layers: int | None = Field(
        None, description="the network's normalised layers (activation histograms), as the "
        "worker that built it recorded (run.info.size.n_layers); null before it was built"
    )
    environment: dict[str, Any] | None = Field(
        None, description="what changes the numbers besides spec and seed, as recorded when "
        "training started (worker) or at landscope.init (sdk): torch_threads, "
        "interop_threads, deterministic, cudnn, dtype, device, device_name, cpu, isa, "
        "versions {python, torch, numpy, landscope}; null before a worker started the run"
    )
    x_axis: dict[str, Any] | None = Field(
        None, description="what a step is in samples and epochs: {\"batch_size\": int or null "
        "(null: full batch), \"train_size\": int or null}; service runs: written when training "
        "starts, with the training set as loaded; sdk runs: from landscope.init(batch_size=, "
        "train_size=); null when not known")


class ExperimentOut(BaseModel):
    id: int
    name: str
    source: Source = Field("service", description="sdk: runs of users' own loops")
    preset: str | None
    base_spec: dict[str, Any]
    vary: dict[str, Any]
    analyses: list[dict[str, Any]] = Field(
        default_factory=list, description="run on each run once it succeeds (AnalysisSpec)")
    created_at: datetime
    status_counts: dict[str, int] = Field(description="runs by status")
    tags: list[str] = Field(default_factory=list, description="the user's tags, sorted")
    note: str | None = Field(None, description="the user's note")


class ExperimentDetail(ExperimentOut):
    runs: list[RunOut]


class LimitsOut(BaseModel):
    """This server's limits on one run and on the queue (LANDSCOPE_MAX_*): a spec over any
    of them is refused with a 422 at the field that drives it."""

    max_steps: int
    max_width: int = Field(description="widest layer, units or channels")
    max_batch: int
    max_queued_runs: int
    max_runs_per_experiment: int
    max_params: int = Field(description="estimated model parameters")
    max_memory_mb: float = Field(description="estimated training memory, MiB")
    max_dataset_mb: float = Field(description="dataset in memory, MiB")
    max_cost_steps: float = Field(description="whole run in training-step units")
    max_analysis_points: int = Field(description="grid points of one analysis, all steps")
    max_lanczos_steps: int = Field(description="Hessian-vector products of one analysis")
    max_analysis_memory_mb: float = Field(description="estimated memory of one analysis, MiB")


class PresetOut(BaseModel):
    name: str
    figures: str = Field(description="the paper's figures it reproduces")
    description: str
    base: dict[str, Any]
    vary: dict[str, list[Any]]
    analyses: list[dict[str, Any]] = Field(
        default_factory=list, description="default analyses of each run once it succeeds")
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
