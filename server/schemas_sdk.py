"""Request and response bodies of the SDK's endpoints (landscope.init, its transport, finish).

The ingest batch itself has no pydantic model: a batch carries up to millions of numbers and
is checked by hand (server/services/ingest.py); `IngestBatchDoc` only documents its shape in
/openapi.json.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.schemas import JsonFloat
from server.text import StoredText

MAX_CONFIG_BYTES = 64 * 1024  # the config dict, as compact JSON
MAX_ENVIRONMENT_BYTES = 16 * 1024  # the environment dict, as compact JSON
INT32_MAX = 2**31 - 1
Step = Annotated[int, Field(ge=0, le=INT32_MAX)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SdkRunCreate(_Request):
    """A run trained by the caller's own loop. `client_id` identifies it: the same id again
    (a retried init, `landscope sync` of an offline run) answers with the same run."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "client_id": "0123456789abcdef0123456789abcdef", "experiment": "sweep",
            "name": "resnet-bn", "config": {"lr": 0.1}, "total": 1000,
        }]},
    )

    client_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="uuid4 hex, made by the SDK")
    experiment: StoredText | None = Field(
        None, min_length=1, max_length=200,
        description="the newest SDK experiment of this name (created if there is none)",
    )
    experiment_id: int | None = Field(None, ge=1, le=INT32_MAX,
                                      description="an existing SDK experiment")
    name: StoredText = Field(min_length=1, max_length=200)
    config: dict[str, Any] = Field(
        default_factory=dict, description="free-form (at most 64 KiB as JSON); non-finite "
        "numbers are stored as the strings \"NaN\", \"Infinity\", \"-Infinity\"",
    )
    total: int | None = Field(None, ge=0, le=INT32_MAX,
                              description="steps planned, for progress and ETA; null: unknown")
    environment: dict[str, Any] | None = Field(
        None, description="what changes the loop's numbers, as the SDK records it at init "
        "(torch threads, determinism, dtype, device, CPU and ISA, library versions; at most "
        f"{MAX_ENVIRONMENT_BYTES // 1024} KiB as JSON): RunOut.environment",
    )
    batch_size: int | None = Field(
        None, ge=1, le=INT32_MAX, description="samples per step, for the epoch and samples "
        "x-axes (RunOut.x_axis); null: full batch (or unknown)")
    train_size: int | None = Field(None, ge=1, le=INT32_MAX,
                                   description="training samples in an epoch; null: unknown")

    @model_validator(mode="after")
    def _one_experiment(self) -> SdkRunCreate:
        if self.experiment is not None and self.experiment_id is not None:
            raise ValueError("give either experiment (a name) or experiment_id, not both")
        return self


class SdkRunFinish(_Request):
    status: Literal["succeeded", "failed", "cancelled"] = Field(
        description="cancelled: the loop honoured a cancel request (see the ingest answer)")
    error: StoredText | None = Field(None, max_length=20_000)
    step: int | None = Field(None, ge=0, le=INT32_MAX - 1,
                             description="the last step trained (runs.step counts one more)")


class IngestOut(BaseModel):
    points: int = Field(description="scalar points received (stored unless already there)")
    etas: int = Field(description="per-eta probe records received")
    distributions: int = Field(description="histograms received")
    status: str = Field(description="the run's status after this batch")
    cancel_requested: bool = Field(description="someone asked this run to stop: the loop "
                                   "should finish with status cancelled")


# -- documentation only: the ingest batch's shape -------------------------------------------


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScalarColumnDoc(_Doc):
    key: str = Field(min_length=1, max_length=200)
    steps: list[Step]
    values: list[JsonFloat] = Field(description="as many as steps")


class EtaPointDoc(_Doc):
    multiplier: float
    eta: float
    loss: JsonFloat
    grad_dist: JsonFloat


class EtaBatchDoc(_Doc):
    step: Step
    probe: str = Field(min_length=1, max_length=32)
    records: list[EtaPointDoc]


class DistributionDoc(_Doc):
    step: Step
    layer: Step
    scope: Literal["layer", "unit"]
    unit: Step | None = None
    lo: float
    hi: float
    counts: list[Annotated[int, Field(ge=0, le=2**53)]]
    underflow: Step = 0
    overflow: Step = 0
    nonfinite: Step = 0
    mean: JsonFloat
    var: JsonFloat
    quantiles: dict[str, JsonFloat] = Field(default_factory=dict)


class HeartbeatDoc(_Doc):
    step: int | None = Field(None, ge=0, le=INT32_MAX - 1, description="the last step trained")
    last_loss: JsonFloat | None = None


class ScalarBlockDoc(_Doc):
    """Binary scalars, format 1 (docs/api.md): n steps and an n x len(keys) matrix of values
    (one row per step), little-endian, base64."""

    v: Literal[1] = Field(description="the block format")
    keys: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1)
    n: int = Field(ge=0, le=2_000_000, description="rows (steps)")
    step_dtype: Literal["<i4", "<i8"]
    steps: str = Field(description="base64 of n steps, each in [0, 2**31 - 1]")
    value_dtype: Literal["<f8", "<f4"]
    values: str = Field(description="base64 of n x len(keys) floats, row-major; NaN and "
                                    "infinities are data")


class IngestBatchDoc(_Doc):
    """Every part optional. Non-finite numbers as "NaN", "Infinity", "-Infinity"."""

    scalars: list[ScalarColumnDoc] = Field(default_factory=list)
    blocks: list[ScalarBlockDoc] = Field(default_factory=list)
    etas: list[EtaBatchDoc] = Field(default_factory=list)
    distributions: list[DistributionDoc] = Field(default_factory=list)
    heartbeat: HeartbeatDoc | None = None
