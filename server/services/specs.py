"""From a request's spec parts to validated RunSpecs, with errors located in the request.

A spec is assembled in layers (a preset's base, the request's base or spec, overrides, one
combination of vary), so an error found in the finished spec is reported at the request field
that set it: ("body", "vary", "lr") when lr was varied, ("body", "base", "probes", "landscape",
"every") when the base set it. Server limits are checked here too, so no request can ask a
worker for more than the deployment allows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from server.presets import PRESETS, Preset
from server.services.errors import InvalidRequest
from server.settings import Settings
from server.spec import RunSpec, SpecError, apply_overrides, build_spec, flatten

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Origin:
    """Spec keys one part of the request set, and where that part sits in the request.

    `dotted`: the part's keys are written as whole dotted strings (vary: {"probes.ics.every":
    [...]}) so the loc names the key as written; otherwise the loc follows the field path."""

    loc: Loc
    keys: frozenset[str]
    dotted: bool = False


def _parts(path: str) -> Loc:
    return tuple(int(p) if p.isdigit() else p for p in path.split(".")) if path else ()


def _related(key: str, path: str) -> bool:
    # An error at "noise" comes from a key set under it ("noise.scale_low") and vice versa.
    return key == path or path.startswith(key + ".") or key.startswith(path + ".")


def locate(path: str, origins: Sequence[Origin], fallback: Loc) -> Loc:
    """Where in the request the spec field `path` was set; `fallback` + path otherwise."""
    if path:
        for origin in origins:
            for key in origin.keys:
                if _related(key, path):
                    return (*origin.loc, key) if origin.dotted else (*origin.loc, *_parts(path))
    return (*fallback, *_parts(path))


def reject_nonfinite(value: Any, loc: Loc) -> None:
    """JSON bodies may carry NaN/Infinity (Python's parser accepts them); no spec field wants
    one, and a JSON column cannot store one on PostgreSQL."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(loc, "must be a finite number", "finite_number")
    if isinstance(value, dict):
        for k, v in value.items():
            reject_nonfinite(v, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            reject_nonfinite(v, (*loc, i))


def find_preset(name: str | None, loc: Loc = ("body", "preset")) -> Preset | None:
    if name is None:
        return None
    if name not in PRESETS:
        raise InvalidRequest(loc, f"unknown preset; known: {', '.join(PRESETS)}", "enum")
    return PRESETS[name]


def merge(base: dict[str, Any], overrides: dict[str, Any], loc: Loc) -> dict[str, Any]:
    """`overrides` (nested or dotted) applied over `base`; unknown keys raise at their loc."""
    reject_nonfinite(overrides, loc)
    try:
        return apply_overrides(base, flatten(overrides))
    except SpecError as exc:
        raise InvalidRequest((*loc, *_parts(exc.path)), exc.message) from None


def validate(
    data: dict[str, Any], settings: Settings, origins: Sequence[Origin], fallback: Loc
) -> RunSpec:
    """A RunSpec within the server's limits, or InvalidRequest at the field that broke it."""
    try:
        spec = build_spec(data)
    except SpecError as exc:
        raise InvalidRequest(locate(exc.path, origins, fallback), exc.message) from None
    for path, msg in limit_violations(spec, settings):
        raise InvalidRequest(locate(path, origins, fallback), msg, "server_limit")
    return spec


def limit_violations(spec: RunSpec, s: Settings) -> Iterable[tuple[str, str]]:
    """(field, message) for every value over a server limit."""
    if spec.steps > s.max_steps:
        yield "steps", f"at most {s.max_steps} steps on this server (LANDSCOPE_MAX_STEPS)"
    widest = max(spec.layer_widths(), default=0)
    if widest > s.max_width:
        yield "width", (
            f"the widest layer would have {widest} units or channels; this server allows "
            f"{s.max_width} (LANDSCOPE_MAX_WIDTH)"
        )
    batches = [("batch_size", spec.batch_size), ("eval_batch_size", spec.eval_batch_size)]
    if spec.batch_size is None and spec.dataset == "gaussian_linear":
        batches.append(("n_samples", spec.n_samples))  # full batch: every sample at once
    for field, size in batches:
        if size is not None and size > s.max_batch:
            yield field, f"batches of at most {s.max_batch} on this server (LANDSCOPE_MAX_BATCH)"
