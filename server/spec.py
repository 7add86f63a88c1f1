"""The run spec: the one contract between the CLI, the REST API, the worker and the dashboard.

A spec says everything that determines a run's trajectory and its measurements, so a figure can
always say exactly what was measured. It is plain pydantic (no torch, no FastAPI) so that every
layer can import it. Unknown keys are errors, never silently ignored.

Step numbering: step t trains on minibatch B_t from parameters w_t; every metric recorded at
step t is measured at w_t on B_t (see docs/engine.md).

The spec's names (spec_names.py), its parts (spec_parts.py) and how it is built from overrides
(spec_build.py) live in modules of their own; every name is re-exported here, so
`from server.spec import ...` reaches all of them.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from server.spec_build import (
    FREE_FORM,
    SpecError,
    apply_overrides,
    build_spec,
    expand_vary,
    flatten,
    parse_value,
)
from server.spec_names import (
    DIGITS_SIZES,
    MAX_OPTIONS_BYTES,
    MAX_OPTIONS_KEYS,
    MAX_PLUGIN_NAME,
    NORMS,
    PLUGIN_NAME,
    RESNET_WIDTHS,
    SHIFT_FREE_NORMS,
    VGG_CONFIGS,
    DatasetName,
    ModelName,
    NormName,
    _digits_options,
    builtin_datasets,
    builtin_models,
    is_plugin_name,
)
from server.spec_parts import (
    MAX_ACTIVATION,
    MAX_COUNT,
    MAX_DEPTH,
    MAX_MULTIPLIER,
    MAX_NOISE,
    MAX_SNAPSHOT_STEPS,
    SHARPNESS_MIN_ITERS,
    ActivationsSpec,
    IcsSpec,
    LandscapeSpec,
    NoiseSpec,
    ProbesSpec,
    SharpnessSpec,
    SnapshotSpec,
    _Strict,
)

__all__ = [
    "FREE_FORM",
    "ActivationsSpec",
    "DIGITS_SIZES",
    "DatasetName",
    "IcsSpec",
    "LandscapeSpec",
    "MAX_ACTIVATION",
    "MAX_COUNT",
    "MAX_DEPTH",
    "MAX_MULTIPLIER",
    "MAX_NOISE",
    "MAX_OPTIONS_BYTES",
    "MAX_OPTIONS_KEYS",
    "MAX_PLUGIN_NAME",
    "MAX_SNAPSHOT_STEPS",
    "ModelName",
    "NORMS",
    "NoiseSpec",
    "NormName",
    "PLUGIN_NAME",
    "ProbesSpec",
    "RESNET_WIDTHS",
    "SHARPNESS_MIN_ITERS",
    "SHIFT_FREE_NORMS",
    "SharpnessSpec",
    "SnapshotSpec",
    "VGG_CONFIGS",
    "builtin_datasets",
    "builtin_models",
    "is_plugin_name",
    "RunSpec",
    "SpecError",
    "apply_overrides",
    "build_spec",
    "expand_vary",
    "flatten",
    "parse_value",
]


VGG_WIDTH = 1.0  # vgg's default channel multiplier: the paper's network


def default_width(model: str | None) -> float:
    """The width a spec of `model` gets when it names none: vgg's multiplier (1, the paper's
    channels), else RunSpec's default units (dln/mlp; resnet ignores width)."""
    return VGG_WIDTH if model == "vgg" else RunSpec.model_fields["width"].default


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
        description="vgg: channel multiplier (1 = paper, vgg's default); dln/mlp: hidden units "
        "(default 128)",
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
    deterministic: bool = Field(
        False, description="deterministic algorithms (torch.use_deterministic_algorithms, "
        "cuDNN deterministic, no autotuning): on a GPU the same spec and seed then give the same "
        "numbers run after run, at some cost in speed; an op with no deterministic version "
        "fails the run, naming it. CPU kernels are deterministic either way (docs/engine.md)",
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

    @model_validator(mode="before")
    @classmethod
    def _width_of_the_model(cls, data: Any) -> Any:
        # width counts units for dln/mlp (128 by default) but multiplies the paper's channels
        # for vgg: a vgg spec without one gets 1, not a 128x-wide network (whose build alone
        # ran for minutes in `landscope train` before anything said why).
        if isinstance(data, dict) and data.get("model") == "vgg" and data.get("width") is None:
            return {**data, "width": default_width("vgg")}
        return data

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
        if self.bf16 and self.device == "cpu":  # the engine would fail the run once claimed
            raise ValueError("bf16 autocast runs on CUDA only: this run is set to the CPU")
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
