"""The names a run spec may use: normalisations, built-in models and datasets, plug-in names
and the built-in dataset options, and the architectures' layer configurations (server/spec.py
holds the spec itself and re-exports all of these)."""

from __future__ import annotations

import re
from typing import Any, Literal

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
