"""The run spec: the one contract between the CLI, the REST API, the worker and the dashboard.

A spec says everything that determines a run's trajectory and its measurements, so a figure can
always say exactly what was measured. It is plain pydantic (no torch, no FastAPI) so that every
layer can import it. Unknown keys are errors, never silently ignored.

Step numbering: step t trains on minibatch B_t from parameters w_t; every metric recorded at
step t is measured at w_t on B_t (see docs/engine.md).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

NormName = Literal[
    "none", "batch", "noisy_batch", "noise", "l1", "l2", "linf", "layer", "group"
]
NORMS: tuple[str, ...] = NormName.__args__  # type: ignore[attr-defined]
ModelName = Literal["vgg", "dln", "mlp", "resnet"]
DatasetName = Literal["cifar10", "gaussian_linear", "digits", "mnist1d"]

# Plug-ins (worker/engine/plugins.py): a model or dataset that an installed distribution
# provides under the entry-point group landscope.models / landscope.datasets, named by its
# entry point. Only the name travels: a worker looks it up among its entry points and never
# imports anything a spec names. The server accepts it only when a live worker reports it.
PLUGIN_NAME = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
MAX_PLUGIN_NAME = 100
MAX_OPTIONS_BYTES = 16 * 1024  # model_options / dataset_options, as compact JSON
MAX_OPTIONS_KEYS = 64
# The one built-in dataset option: digits' `size`, its 8x8 images resized to size x size at
# load (worker/engine/data/digits.py), e.g. 32 so VGG's five pools act as on CIFAR-10. Upward
# only (a smaller image would drop pixels); 64 bounds the data's memory (1,797 x 64 x 64 floats).
DIGITS_SIZES = (8, 64)


def builtin_models() -> tuple[str, ...]:
    return ModelName.__args__  # type: ignore[attr-defined]


def builtin_datasets() -> tuple[str, ...]:
    return DatasetName.__args__  # type: ignore[attr-defined]


def _digits_options(v: dict[str, Any]) -> dict[str, Any]:
    """digits takes `size` only: an integer in DIGITS_SIZES. Errors carry the option's own
    path (dataset_options.size), as a plug-in's option errors do."""
    from pydantic import ValidationError
    from pydantic_core import InitErrorDetails, PydanticCustomError

    def fail(key: str, message: str) -> ValidationError:
        return ValidationError.from_exception_data("dataset_options", [InitErrorDetails(
            type=PydanticCustomError("value_error", message), loc=(key,), input=v[key])])

    for key in v:
        if key != "size":
            raise fail(key, "unknown option; dataset 'digits' takes: size")
    size = v.get("size", DIGITS_SIZES[0])
    lo, hi = DIGITS_SIZES
    if type(size) is not int or not lo <= size <= hi:
        raise fail("size", f"must be an integer from {lo} to {hi} (the images' side in pixels)")
    return v


def is_plugin_name(name: str, kind: Literal["model", "dataset"]) -> bool:
    """Whether `name` names a plug-in: a valid name that is not a built-in."""
    builtins = builtin_models() if kind == "model" else builtin_datasets()
    return name not in builtins and re.fullmatch(PLUGIN_NAME, name) is not None

# CIFAR VGG layer configs (paper-protocol.md): ints are 3x3 conv widths, "M" a 2x2 max-pool.
VGG_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}
# CIFAR ResNets (He et al. 2016; worker/engine/resnet.py): depth 6n+2, three stages of n basic
# blocks at these widths. A conv before a norm with no learnable shift keeps its bias.
RESNET_WIDTHS: tuple[int, int, int] = (16, 32, 64)
SHIFT_FREE_NORMS: tuple[str, ...] = ("none", "noise")


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


class RunSpec(_Strict):
    """Everything that determines one run. Defaults give a small CPU-friendly MLP on mnist1d."""

    # Model
    model: str = Field(
        "mlp", max_length=MAX_PLUGIN_NAME,
        description="a built-in model, or the name of a plug-in model a worker has installed "
        "(entry-point group landscope.models; GET /api/v1/workers lists them)",
        json_schema_extra={"anyOf": [{"enum": list(builtin_models())},
                                     {"pattern": PLUGIN_NAME}]},
    )
    model_options: dict[str, Any] = Field(
        default_factory=dict,
        description="plug-in models only: JSON passed to the plug-in's factory as is "
        f"(at most {MAX_OPTIONS_BYTES // 1024} KiB)",
        json_schema_extra={"maxProperties": MAX_OPTIONS_KEYS},
    )
    vgg_config: Literal[11, 16] = 11
    resnet_depth: Literal[20, 32, 56] = Field(
        20, description="resnet: depth 6n+2 (n basic blocks per stage, 16/32/64 channels)"
    )
    skip: bool = Field(
        True, description="resnet: identity shortcuts; false = the same net without them "
        "(Li et al. 2018's 'noshort')",
    )
    width: float = Field(
        128, gt=0, le=1_000_000,
        description="vgg: channel multiplier (1 = paper); dln/mlp: hidden units",
    )
    depth: int = Field(4, ge=1, le=MAX_DEPTH, description="dln/mlp: number of linear layers")
    norm: NormName = "none"
    norm_groups: int = Field(8, ge=1, le=1_000_000, description="groups for group norm")
    norm_eps: float = Field(1e-5, gt=0, le=1)
    noise: NoiseSpec = Field(default_factory=NoiseSpec)

    # Data
    dataset: str = Field(
        "mnist1d", max_length=MAX_PLUGIN_NAME,
        description="a built-in dataset, or the name of a plug-in dataset a worker has "
        "installed (entry-point group landscope.datasets)",
        json_schema_extra={"anyOf": [{"enum": list(builtin_datasets())},
                                     {"pattern": PLUGIN_NAME}]},
    )
    dataset_options: dict[str, Any] = Field(
        default_factory=dict,
        description="plug-in datasets: JSON passed to the plug-in's factory as is "
        f"(at most {MAX_OPTIONS_BYTES // 1024} KiB); digits: {{\"size\": n}} resizes its "
        f"8x8 images to n x n ({DIGITS_SIZES[0]} to {DIGITS_SIZES[1]}), bilinearly",
        json_schema_extra={"maxProperties": MAX_OPTIONS_KEYS},
    )
    n_samples: int = Field(
        1000, ge=2, le=100_000_000, description="gaussian_linear: samples (train and test each)"
    )
    input_dim: int = Field(10, ge=1, le=1_000_000, description="gaussian_linear: dimension of x")

    # Training
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0, le=1000)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=100)
    batch_size: int | None = Field(128, ge=1, le=MAX_COUNT, description="None = full batch")
    loss: Literal["cross_entropy", "sum_squares"] = "cross_entropy"
    steps: int = Field(1000, ge=1, le=MAX_COUNT)
    seed: int = Field(0, ge=0, lt=2**63)
    device: str = Field("auto", max_length=16, pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    bf16: bool = Field(False, description="bf16 autocast (CUDA only)")
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="precision of the parameters, the data and every probe; "
        "float64 where float32 rounding would move the result (the DLN presets)",
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="torch intra-op threads for this run; null: the "
        "worker's LANDSCOPE_TORCH_THREADS, else 1 (docs/engine.md, 'Threads')",
    )
    eval_every: int = Field(
        100, ge=0, le=MAX_COUNT, description="test loss/accuracy every N steps; 0 = off"
    )
    eval_batch_size: int = Field(1000, ge=1, le=MAX_COUNT)
    on_nonfinite: Literal["stop", "continue"] = Field(
        "stop", description="stop: a non-finite loss ends the run as diverged at that step"
    )
    checkpoint_every: int = Field(
        0, ge=0, le=MAX_COUNT, description="checkpoint every N steps; 0 = off"
    )

    probes: ProbesSpec = Field(default_factory=ProbesSpec)
    snapshots: SnapshotSpec = Field(default_factory=SnapshotSpec)

    @field_validator("model", "dataset")
    @classmethod
    def _builtin_or_plugin(cls, v: str, info: ValidationInfo) -> str:
        kind = info.field_name
        builtins = builtin_models() if kind == "model" else builtin_datasets()
        if v in builtins or is_plugin_name(v, kind):
            return v
        raise ValueError(
            f"unknown {kind} {v!r}; built-in: {', '.join(builtins)}; or a plug-in's name "
            "(lower-case letters, digits and _, dot-separated, e.g. 'mylab.wide_net')"
        )

    @field_validator("model_options", "dataset_options")
    @classmethod
    def _small_json(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.field_name.removesuffix("_options")
        name = info.data.get(kind)  # absent when that field failed: its error is reported
        if kind == "dataset" and name == "digits":
            return _digits_options(v)
        if v and name is not None and not is_plugin_name(name, kind):
            # Built-ins take their settings from the spec's own fields: options would be
            # silently ignored, and no spec key is.
            raise ValueError(f"only plug-in {kind}s take options; {kind} {name!r} is built in")
        if len(v) > MAX_OPTIONS_KEYS:
            raise ValueError(f"at most {MAX_OPTIONS_KEYS} keys")
        try:
            text = json.dumps(v, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be JSON with finite numbers ({exc})") from None
        if len(text.encode()) > MAX_OPTIONS_BYTES:
            raise ValueError(f"at most {MAX_OPTIONS_BYTES} bytes as JSON")
        return v

    @field_validator("skip", mode="before")
    @classmethod
    def _skip_bool(cls, v: Any) -> Any:
        # Only real booleans, as probes.landscape.batched: a typo never flips the architecture.
        if not isinstance(v, bool):
            raise ValueError("must be true or false")
        return v

    @field_validator("resnet_depth", "skip")
    @classmethod
    def _resnet_only(cls, v: Any, info: ValidationInfo) -> Any:
        # Settings of one model are not silently ignored by another (model is validated first).
        model, default = info.data.get("model"), cls.model_fields[info.field_name].default
        if model is not None and model != "resnet" and v != default:
            raise ValueError(f"{info.field_name} applies to model 'resnet' only")
        return v

    @field_validator("batch_size", mode="before")
    @classmethod
    def _full_batch_words(cls, v: Any) -> Any:
        return None if isinstance(v, str) and v.lower() in ("none", "null", "full") else v

    @field_validator("lr", "weight_decay", "norm_eps", "width", "momentum")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        if self.model in ("dln", "mlp") and self.width != int(self.width):
            raise ValueError(f"width must be a whole number of units for model {self.model!r}")
        if self.bf16 and self.dtype != "float32":
            raise ValueError("bf16 autocast applies to float32 runs only; set dtype=float32")
        if self.model == "dln" and self.loss != "sum_squares":
            raise ValueError("model 'dln' regresses: use loss 'sum_squares'")
        if self.dataset == "gaussian_linear" and self.loss != "sum_squares":
            raise ValueError("dataset 'gaussian_linear' is regression: use loss 'sum_squares'")
        if self.model in ("vgg", "resnet") and self.dataset not in ("cifar10", "digits") \
                and not self.plugin_dataset:  # a plug-in's shape is known once loaded
            raise ValueError(
                f"model {self.model!r} needs image data: dataset 'cifar10' or 'digits'")
        if self.norm == "group":
            bad_w = sorted({w for w in self.layer_widths() if w % self.norm_groups})
            if bad_w:
                raise ValueError(
                    f"norm_groups={self.norm_groups} must divide every layer width; {bad_w} do not"
                )
        late = [s for s in self.snapshots.steps if s > self.steps]
        if late:
            raise ValueError(f"snapshots.steps {late} exceed the run's {self.steps} steps")
        n = self.n_weight_layers()  # None for a plug-in: the engine checks once it is built
        bad = [i for i in self.probes.ics.layers if n is not None and i > n]
        if self.probes.ics.every and bad:
            raise ValueError(f"probes.ics.layers {bad} exceed the model's {n} weight layers")
        return self

    @property
    def plugin_model(self) -> bool:
        return is_plugin_name(self.model, "model")

    @property
    def plugin_dataset(self) -> bool:
        return is_plugin_name(self.dataset, "dataset")

    def n_weight_layers(self) -> int | None:
        """Weight (conv/linear) layers from input to output; the last one is never normalised.
        None for a plug-in model: only the built model knows (worker/engine/plugins.py)."""
        if self.plugin_model:
            return None
        if self.model == "vgg":
            return sum(1 for c in VGG_CONFIGS[self.vgg_config] if c != "M") + 1
        if self.model == "resnet":  # the stem, 2 convs per block, the classifier
            return self.resnet_depth
        return self.depth

    def layer_widths(self) -> list[int]:
        """Output width (units or channels) of every normalised layer, input side first;
        empty for a plug-in model (the engine reads them off the built model)."""
        if self.plugin_model:
            return []
        if self.model == "vgg":
            cfg = VGG_CONFIGS[self.vgg_config]
            return [max(1, round(c * self.width)) for c in cfg if c != "M"]
        if self.model == "resnet":  # the stem's, then each stage's 2n convolutions
            n = (self.resnet_depth - 2) // 6
            return [RESNET_WIDTHS[0]] + [w for w in RESNET_WIDTHS for _ in range(2 * n)]
        return [int(self.width)] * (self.depth - 1)

    def probe_cost(self, bound: Literal["least", "most"] = "least") -> dict[str, float]:
        """Extra forward+backward passes per training step that the probes add, by probe, and
        `floor`: the slowdown against plain training (paper-protocol.md, "Cost floor").
        Activations, gradient norm and distance ride on the training pass and cost nothing.

        Sharpness stops on a tolerance, so its cost is a range: one gradient pass plus two per
        Lanczos step, for at least SHARPNESS_MIN_ITERS steps (it compares two estimates) and
        at most max_iters. `bound="least"` gives the floor the paper's protocol defines (what
        the dashboard shows as "at least"); "most" the worst case, which admission control
        charges (server/cost.py), so a spec cannot pass the limits on its best case."""
        p = self.probes
        iters = (p.sharpness.max_iters if bound == "most"
                 else min(SHARPNESS_MIN_ITERS, p.sharpness.max_iters))
        cost = {
            "landscape": len(p.landscape.multipliers) / p.landscape.every if p.landscape.every
            else 0.0,
            "ics": len(p.ics.layers) / p.ics.every if p.ics.every else 0.0,
            "sharpness": (1 + 2 * iters) / p.sharpness.every if p.sharpness.every
            else 0.0,
        }
        return {**cost, "floor": 1.0 + sum(cost.values())}

    def name_hint(self) -> str:
        """A short human label, e.g. 'vgg11x0.25-batch-lr0.1-s0'."""
        arch = (
            f"vgg{self.vgg_config}x{self.width:g}"
            if self.model == "vgg"
            else f"resnet{self.resnet_depth}{'' if self.skip else '-noshort'}"
            if self.model == "resnet"
            else self.model if self.plugin_model  # width and depth are the plug-in's business
            else f"{self.model}{self.depth}x{int(self.width)}"
        )
        return f"{arch}-{self.norm}-lr{self.lr:g}-s{self.seed}"


# ---------------------------------------------------------------------------------------------
# Overrides: "key=value" strings from the CLI and {dotted.key: value} dicts from the API.


class SpecError(ValueError):
    """A bad override or spec: `path` names the field (dotted), `message` what is allowed."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def parse_value(text: str) -> Any:
    """CLI values: JSON-ish scalars and lists ('0.1', 'true', 'null', '[1,2]', '1,2' -> list)."""
    import json

    t = text.strip()
    if t.lower() == "null":  # "none" stays a string: it is a normalisation's name
        return None
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return json.loads(t)
    except ValueError:
        pass
    if "," in t:
        return [parse_value(part) for part in t.split(",")]
    return t


# Free-form JSON fields: a dict given for one is a value (it replaces the whole field), not a
# section to merge key by key; a dotted override ("model_options.hidden=32") sets one key.
FREE_FORM = frozenset({"model_options", "dataset_options"})


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections to dotted keys, so a partial section merges into the preset's one
    instead of replacing it ({"probes": {"ics": {"every": 5}}} keeps probes.landscape)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key not in FREE_FORM:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a (nested) spec dict; unknown keys raise SpecError naming the key."""
    out = _deep_copy(base)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        model: type[BaseModel] = RunSpec
        node = out
        for i, part in enumerate(parts):
            fields = model.model_fields
            names = _accepted_names(model)
            if part not in names:
                where = ".".join(parts[:i]) or "the run spec"
                raise SpecError(dotted, f"unknown key; {where} has: {', '.join(sorted(fields))}")
            if i == len(parts) - 1:
                for other, name in names.items():  # an old name replaces the new one, and back
                    if name == names[part] and other != part:
                        node.pop(other, None)
                node[part] = value
                break
            if model is RunSpec and part in FREE_FORM:
                _set_nested(node, parts[i:], value)
                break
            sub = fields[part].annotation
            if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
                raise SpecError(dotted, f"{'.'.join(parts[: i + 1])} is a value, not a section")
            node = node.setdefault(part, {})
            model = sub
    return out


def _accepted_names(model: type[BaseModel]) -> dict[str, str]:
    """Every key the model accepts (its field names and their old names, e.g. SharpnessSpec's
    `iters`), mapped to the field's name."""
    out = {name: name for name in model.model_fields}
    for name, f in model.model_fields.items():
        if isinstance(f.validation_alias, AliasChoices):
            out.update({a: name for a in f.validation_alias.choices if isinstance(a, str)})
    return out


def _set_nested(node: dict[str, Any], keys: list[str], value: Any) -> None:
    """node[k0][k1]...[kn] = value, making (or replacing non-dict values by) dicts on the way;
    `node` is already a deep copy."""
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def build_spec(data: dict[str, Any]) -> RunSpec:
    """Validate a spec dict, turning pydantic errors into one SpecError with the field path."""
    from pydantic import ValidationError

    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"])
        raise SpecError(path, err["msg"]) from None


def expand_vary(base: dict[str, Any], vary: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cross product of `vary` over `base`: one spec dict per combination, in a stable order.

    Runs of one experiment differ only in the varied keys, so they share seed and data order
    unless `seed` itself is varied.
    """
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"vary.{key}", "must be a non-empty list of values")
    keys = list(vary)
    combos = itertools.product(*(vary[k] for k in keys)) if keys else [()]
    return [apply_overrides(base, dict(zip(keys, combo, strict=True))) for combo in combos]
