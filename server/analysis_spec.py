"""The analysis spec: what one analysis of a run's saved network measures, and how.

An analysis evaluates a run's network at one or more of its snapshot steps, outside the
training loop (docs/geometry.md). Like the run spec (server/spec.py) this is plain pydantic, no
torch, no FastAPI: the API validates it, the worker and the CLI run it, the dashboard draws its
results, all from this one definition. Unknown keys are errors.

Kinds:
- slice: L(theta + a d) for a on a 1D grid; or, with directions "interpolation", the straight
  line theta_a -> theta_b (a = 0 at theta_a, a = 1 at theta_b) and its barrier;
- surface: L(theta + a d1 + b d2) on a 2D grid;
- trajectory: the run's snapshots projected on the PCA plane of theta_i - theta_T, and the
  surface of that plane;
- spectrum: top-k Hessian eigenvalues (Lanczos), trace (Hutchinson), eigenvalue density
  (stochastic Lanczos quadrature) and the gradient's share in the top-k eigenspace.

BatchNorm mode (`bn_mode`), explicit on every analysis and every figure:
- batch: train-mode batch statistics on each evaluation batch, running statistics untouched
  (the paper's probes measure this way; the default);
- running: eval mode with the snapshot's running statistics (what offline tools do);
- recalibrated: the running statistics recomputed at every evaluated point on a recalibration
  set, then eval mode.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AnalysisKind = Literal["slice", "surface", "trajectory", "spectrum"]
BnMode = Literal["batch", "running", "recalibrated"]
DirectionKind = Literal["random", "gradient", "hessian", "pca", "interpolation"]
KINDS: tuple[str, ...] = AnalysisKind.__args__  # type: ignore[attr-defined]
BN_MODES: tuple[str, ...] = BnMode.__args__  # type: ignore[attr-defined]

MAX_GRID = 101  # points per axis
MAX_COORD = 100.0  # |alpha|, |beta|: a filter-normalised direction has theta's own scale
MAX_STEPS_PER_ANALYSIS = 64
MAX_SAMPLES = 1_000_000
MAX_STEP = 1_000_000_000  # server.spec.MAX_COUNT: no run has more steps

# Which direction kinds each analysis kind takes, and its default.
DIRECTIONS_FOR: dict[str, tuple[str, ...]] = {
    "slice": ("random", "gradient", "hessian", "pca", "interpolation"),
    "surface": ("random", "hessian", "pca"),
    "trajectory": ("pca",),
    "spectrum": ("random",),  # unused: a spectrum needs no direction
}
DEFAULT_POINTS = {"slice": 41, "surface": 21, "trajectory": 21, "spectrum": 1}
# The value-name prefix under which a worker records the environment each step was computed
# in ("environment:<digest>", worker/engine/geometry/job_numerics.py); the API lists them as
# the step's `environments` (server/services/analysis_views.py).
ENV_PREFIX = "environment:"


def split_environments(values: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A step's values without its environment records, and those records (in name order:
    the same every time)."""
    named = {k: v for k, v in values.items() if not k.startswith(ENV_PREFIX)}
    envs = [values[k] for k in sorted(values) if k.startswith(ENV_PREFIX)]
    return named, envs


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Axis(_Strict):
    """Coordinates lo, ..., hi, `points` of them, evenly spaced (both ends included)."""

    lo: float = Field(-1.0, ge=-MAX_COORD, le=MAX_COORD)
    hi: float = Field(1.0, ge=-MAX_COORD, le=MAX_COORD)
    points: int = Field(21, ge=1, le=MAX_GRID)

    @model_validator(mode="after")
    def _ordered(self) -> Axis:
        if self.points > 1 and not self.lo < self.hi:
            raise ValueError("lo must be below hi")
        return self

    def values(self) -> list[float]:
        """The coordinates, computed the same way everywhere (engine, server, dashboard)."""
        if self.points == 1:
            return [self.lo]
        step = (self.hi - self.lo) / (self.points - 1)
        return [self.lo + i * step for i in range(self.points)]


class Directions(_Strict):
    """The direction(s) a slice or surface moves along.

    random: a seeded Gaussian per parameter, from a generator keyed by (seed, parameter name),
    so runs of one architecture get identical raw directions (and runs with and without BN
    share them wherever their parameter names match); then filter-normalised: each output
    filter or neuron rescaled to the norm of the same filter of theta. 1-D parameters (biases,
    norm gamma and beta) are zeroed unless keep_1d. The second direction of a surface uses the
    same generator under another label and is orthogonalised against the first.
    gradient: the full-batch gradient on the evaluation set at theta (slice only).
    hessian: the top (slice) or top-2 (surface) Hessian eigenvectors, by Lanczos.
    pca: the first (slice) or first two (surface, trajectory) principal directions of the
    run's snapshots theta_i - theta_T.
    interpolation: theta_a -> theta_b, with `source` "init" (theta_a = the run's step-0
    snapshot, theta_b = the analysed step) or "run" (theta_a = this run, theta_b = `other_run`,
    both at the analysed step; same architecture).
    """

    kind: DirectionKind = "random"
    seed: int = Field(0, ge=0, lt=2**63, description="direction seed: one per experiment")
    keep_1d: bool = Field(False, description="keep biases and norm gamma/beta (zeroed by default)")
    source: Literal["init", "run"] = "init"
    other_run: int | None = Field(None, ge=1, lt=2**63)

    @model_validator(mode="after")
    def _interpolation(self) -> Directions:
        if self.kind == "interpolation" and self.source == "run" and self.other_run is None:
            raise ValueError("interpolation from another run needs other_run")
        return self


class Spectrum(_Strict):
    top_k: int = Field(5, ge=1, le=50, description="top Hessian eigenvalues (Lanczos)")
    lanczos_steps: int = Field(30, ge=1, le=500, description="Lanczos iterations for top-k")
    trace_probes: int = Field(50, ge=1, le=2000, description="Hutchinson Rademacher probes")
    slq_steps: int = Field(80, ge=2, le=500, description="Lanczos steps per SLQ vector")
    slq_vectors: int = Field(4, ge=1, le=64, description="SLQ starting vectors")
    broadening: float = Field(
        0.01, gt=0, le=1,
        description="Gaussian broadening of the density, as a fraction of the spectrum's width",
    )
    density_points: int = Field(512, ge=16, le=4096)

    @model_validator(mode="after")
    def _enough_steps(self) -> Spectrum:
        if self.lanczos_steps < self.top_k:
            raise ValueError("lanczos_steps must be at least top_k")
        return self


class AnalysisSpec(_Strict):
    kind: AnalysisKind = "surface"
    steps: list[Annotated[int, Field(ge=0, le=MAX_STEP)]] | None = Field(
        None, max_length=MAX_STEPS_PER_ANALYSIS,
        description="snapshot steps to analyse; None = the run's last step "
                    "(trajectory: every snapshot, drawn on the last step's plane)",
    )
    directions: Directions = Field(default_factory=Directions)
    x: Axis | None = Field(None, description="first axis; default by kind (slice 41, surface 21)")
    y: Axis | None = Field(None, description="second axis (surface, trajectory)")
    bn_mode: BnMode = "batch"
    eval_samples: int | None = Field(
        2048, ge=1, le=MAX_SAMPLES,
        description="seeded subset of the training set; None = all of it",
    )
    eval_seed: int = Field(0, ge=0, lt=2**63, description="seed of the evaluation subset")
    batch_size: int | None = Field(
        None, ge=1, le=MAX_SAMPLES,
        description="evaluation batch; None = the run's training batch size (BN statistics of "
                    "training-size batches)",
    )
    recalibration_samples: int = Field(2048, ge=1, le=MAX_SAMPLES)
    test_set: bool = Field(False, description="also evaluate every point on the test set")
    spectrum: Spectrum = Field(default_factory=Spectrum)
    chunk_points: int = Field(
        64, ge=1, le=MAX_GRID * MAX_GRID, description="grid points per worker task"
    )

    @model_validator(mode="before")
    @classmethod
    def _trajectory_defaults_to_pca(cls, data: Any) -> Any:
        # A trajectory has one direction kind; asking for it by name should not be required.
        if isinstance(data, dict) and data.get("kind") == "trajectory":
            d = data.get("directions")
            if d is None:
                data = {**data, "directions": {"kind": "pca"}}
            elif isinstance(d, dict) and "kind" not in d:
                data = {**data, "directions": {**d, "kind": "pca"}}
        return data

    @field_validator("steps")
    @classmethod
    def _sorted_unique(cls, v: list[int] | None) -> list[int] | None:
        return None if v is None else sorted(set(v))

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisSpec:
        if self.directions.kind not in DIRECTIONS_FOR[self.kind]:
            raise ValueError(
                f"directions.kind {self.directions.kind!r} does not apply to a {self.kind}; "
                f"use one of {list(DIRECTIONS_FOR[self.kind])}"
            )
        return self

    def x_axis(self) -> Axis:
        if self.x is not None:
            return self.x
        if self.directions.kind == "interpolation":
            return Axis(lo=-0.5, hi=1.5, points=DEFAULT_POINTS["slice"])
        return Axis(points=DEFAULT_POINTS[self.kind])

    def y_axis(self) -> Axis | None:
        """The second axis, or None for kinds with one (slice) or none (spectrum)."""
        if self.kind not in ("surface", "trajectory"):
            return None
        return self.y if self.y is not None else Axis(points=DEFAULT_POINTS[self.kind])

    def grid_shape(self) -> tuple[int, int]:
        """(ny, nx) of the grid: (1, nx) for a slice, (0, 0) for a spectrum."""
        if self.kind == "spectrum":
            return (0, 0)
        y = self.y_axis()
        return (y.points if y else 1, self.x_axis().points)

    def grid_points(self) -> int:
        ny, nx = self.grid_shape()
        return ny * nx


def grid_index(ix: int, iy: int, nx: int) -> int:
    """A grid point's flat index, row-major over (iy, ix): the unit of idempotent writes."""
    return iy * nx + ix


def chunks(n_points: int, per_chunk: int) -> list[range]:
    """Flat grid indices cut into consecutive chunks, the same cut everywhere."""
    return [range(i, min(i + per_chunk, n_points)) for i in range(0, n_points, per_chunk)]
