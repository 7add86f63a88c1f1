"""The parts of a run spec: the spec's own sanity bounds, noisy BatchNorm's noise, the probes'
schedules and settings, and the snapshot schedule (server/spec.py holds the spec itself and
re-exports all of these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

# Sanity bounds of the spec itself, whatever a server allows (its limits are settings and
# cost estimates: server/services/specs.py): every list and string short, every number finite
# and within a range no sensible run leaves.
MAX_DEPTH = 200  # linear layers of an MLP/DLN; no model has more weight layers
MAX_COUNT = 1_000_000_000  # steps, strides, batch sizes
MAX_NOISE = 100.0  # noise parameters (the paper's are at most 1.25)
# The sharpness probe's Lanczos compares consecutive estimates: it cannot stop before step 2.
SHARPNESS_MIN_ITERS = 2
MAX_MULTIPLIER = 1e4  # landscape step size / LR
MAX_ACTIVATION = 1e6  # histogram range bound


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NoiseSpec(_Strict):
    """Algorithm 1 of the paper (noisy BatchNorm); the defaults are the paper's values."""

    mean_range: float = Field(
        0.5, ge=0, le=MAX_NOISE, description="mu_j ~ U(-mean_range, mean_range)"
    )
    scale_low: float = Field(
        1.0, ge=-MAX_NOISE, le=MAX_NOISE, description="sigma_j ~ U(scale_low, scale_high)"
    )
    scale_high: float = Field(1.25, ge=-MAX_NOISE, le=MAX_NOISE)
    mean_jitter: float = Field(
        0.1, ge=0, le=MAX_NOISE, description="m_ij ~ U(mu_j - jitter, mu_j + jitter)"
    )
    scale_std: float = Field(0.1, ge=0, le=MAX_NOISE, description="s_ij ~ N(sigma_j, scale_std)")

    @model_validator(mode="after")
    def _ordered(self) -> NoiseSpec:
        if self.scale_high < self.scale_low:
            raise ValueError("scale_high must be >= scale_low")
        return self


class _Every(_Strict):
    every: int = Field(
        0, ge=0, le=MAX_COUNT, description="probe every N steps (step 0 included); 0 = off"
    )

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0


class LandscapeSpec(_Every):
    """Fig 4 / 10 / 11: loss band, gradient-predictiveness band and effective beta along -g_t."""

    multipliers: list[float] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0, 4.0],
        min_length=1,
        max_length=32,
        description="step sizes eta = multiplier x LR",
        # The bounds _positive checks, stated for clients (the error names the whole list).
        json_schema_extra={"items": {"type": "number", "exclusiveMinimum": 0,
                                     "maximum": MAX_MULTIPLIER}},
    )
    batched: bool = Field(
        False,
        description="evaluate the K step sizes in one torch.func.vmap call (K stacked parameter "
        "sets) instead of a loop of K forward/backward passes; same values up to fp32 rounding, "
        "and the loop is used (and recorded) where vmap cannot run (docs/engine.md)",
    )

    @field_validator("batched", mode="before")
    @classmethod
    def _a_bool(cls, v: Any) -> Any:
        # Only real booleans (and the CLI's parsed true/false): "yes", 1, "0" are not accepted,
        # so that a typo never silently switches the path.
        if not isinstance(v, bool):
            raise ValueError("must be true or false")
        return v

    @field_validator("multipliers")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(not (0 < m <= MAX_MULTIPLIER) for m in v):  # NaN fails too
            raise ValueError(f"every multiplier must be positive and at most {MAX_MULTIPLIER:g}")
        return sorted(set(v))


class IcsSpec(_Every):
    """Definition 2.1 / Fig 3: ||G - G'|| and cos(G, G') for the chosen weight layers."""

    layers: list[int] = Field(
        default_factory=lambda: [1],
        min_length=1,
        max_length=MAX_DEPTH,
        description="weight layers, 1 = nearest the input",
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": MAX_DEPTH}},
    )

    @field_validator("layers")
    @classmethod
    def _from_one(cls, v: list[int]) -> list[int]:
        if any(i < 1 for i in v):
            raise ValueError("layers are counted from 1")
        if any(i > MAX_DEPTH for i in v):
            raise ValueError(f"no model has more than {MAX_DEPTH} weight layers")
        return sorted(set(v))


class ActivationsSpec(_Every):
    """Fig 1c, 2, 6, 8, 9: per normalised layer, histograms of the layer and of one sampled unit."""

    bins: int = Field(64, ge=4, le=512)
    range: tuple[float, float] = Field(
        (-6.0, 6.0),
        description="fixed histogram range [lo, hi]",
        json_schema_extra={"prefixItems": [
            {"type": "number", "minimum": -MAX_ACTIVATION, "maximum": MAX_ACTIVATION}] * 2},
    )
    point: Literal["norm_output", "layer_input"] = Field(
        "norm_output",
        description="norm_output: after the normalisation (and noise), before the nonlinearity, "
        "as in the paper's figures; layer_input: what the next weight layer receives",
    )

    @field_validator("range")
    @classmethod
    def _increasing(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(abs(x) <= MAX_ACTIVATION for x in v):  # NaN fails too
            raise ValueError(f"lo and hi must be finite, within +-{MAX_ACTIVATION:g}")
        if not v[0] < v[1]:
            raise ValueError("range must be (lo, hi) with lo < hi")
        return v


class SharpnessSpec(_Every):
    """The algebraically largest Hessian eigenvalue by Lanczos on Hessian-vector products (vs
    2/LR), run until its relative change falls below `tol` or for `max_iters` steps.

    `iters` (the fixed power-iteration count of earlier versions) is accepted as another name
    for `max_iters`, so that stored specs still validate; a spec is written back as `max_iters`.
    """

    max_iters: int = Field(
        100, ge=1, le=500, validation_alias=AliasChoices("max_iters", "iters"),
        description="at most this many Lanczos steps (one Hessian-vector product each); "
        "`iters` is accepted as an old name",
    )
    tol: float = Field(
        1e-3, ge=0, le=1,
        description="stop when the estimate changes by at most tol x its size in one step "
        "(0 = always run max_iters)",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "iters" in data and "max_iters" in data:
            raise ValueError("give max_iters or its old name iters, not both")
        return data


MAX_SNAPSHOT_STEPS = 1000


class SnapshotSpec(_Strict):
    """Steps whose network (weights and BN buffers) is saved for analyses (server/analysis_spec.py).

    The snapshot at step s is w_s, the weights at which step s's metrics are measured; step 0
    and the last step (w_T, after the last update, saved as step T = steps) are always saved
    when the run has somewhere to save them. Saving changes nothing of the trajectory.
    """

    every: int = Field(0, ge=0, le=MAX_COUNT, description="save every N steps; 0 = off")
    steps: list[int] = Field(
        default_factory=list, max_length=MAX_SNAPSHOT_STEPS,
        description="further steps to save (step 0 and the last step are always saved)",
        json_schema_extra={"items": {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}},
    )

    @field_validator("steps")
    @classmethod
    def _sorted_unique(cls, v: list[int]) -> list[int]:
        if any(not 0 <= s <= MAX_COUNT for s in v):
            raise ValueError(f"steps must lie in [0, {MAX_COUNT}]")
        return sorted(set(v))

    def due(self, step: int, last: int) -> bool:
        """Whether step `step` of a run of `last` steps is saved."""
        if step in (0, last):
            return True
        return (self.every > 0 and step % self.every == 0) or step in self.steps


class ProbesSpec(_Strict):
    mode: Literal["train", "eval"] = Field(
        "train", description="normalisation mode during probes; the paper measures in train mode"
    )
    landscape: LandscapeSpec = Field(default_factory=LandscapeSpec)
    ics: IcsSpec = Field(default_factory=IcsSpec)
    activations: ActivationsSpec = Field(default_factory=ActivationsSpec)
    sharpness: SharpnessSpec = Field(default_factory=SharpnessSpec)
    grad_norm: _Every = Field(default_factory=lambda: _Every(every=1))
    distance: _Every = Field(default_factory=lambda: _Every(every=1))
