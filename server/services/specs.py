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

from server.cost import Cost, estimate
from server.presets import PRESETS, Preset
from server.services.errors import InvalidRequest
from server.settings import Settings
from server.spec import RunSpec, SpecError, apply_overrides, build_spec, flatten
from server.text import text_problem

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
    # isascii: "¹".isdigit() is True, and int("¹") raises (a 500 schemathesis found)
    return tuple(int(p) if p.isascii() and p.isdigit() else p
                 for p in path.split(".")) if path else ()


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


def locate_first(paths: Sequence[str], origins: Sequence[Origin], fallback: Loc) -> Loc:
    """The first of `paths` (the fields behind one quantity, most responsible first) that the
    request set, so the client is told what it can change; else where the first one goes."""
    for path in paths:
        if any(_related(key, path) for origin in origins for key in origin.keys):
            return locate(path, origins, fallback)
    return locate(paths[0], origins, fallback)


# Inside a request's free-form parts: no spec field is deeper, longer or wordier than this.
MAX_NESTING = 8
MAX_ITEMS = 256  # a list's entries or a mapping's keys (probes.ics.layers: at most 200)
MAX_TEXT = 200  # characters of a string or a key


def reject_oversized(value: Any, loc: Loc, *, dotted: bool = False, depth: int = 0) -> None:
    """Refuse, at its loc, a container too deep or too long or a string too long, before
    anything walks or copies the whole of it. `dotted`: keys are spec paths, and the loc
    follows them ("probes.ics.layers" -> probes, ics, layers) as merge's errors do."""
    if depth > MAX_NESTING:
        raise InvalidRequest(loc, f"nested deeper than {MAX_NESTING} levels", "too_deep")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise InvalidRequest(loc, f"at most {MAX_TEXT} characters", "string_too_long")
    if isinstance(value, dict | list) and len(value) > MAX_ITEMS:
        raise InvalidRequest(loc, f"at most {MAX_ITEMS} entries, not {len(value)}", "too_long")
    if isinstance(value, dict):
        for k, v in value.items():
            if len(k) > MAX_TEXT:
                raise InvalidRequest(loc, f"keys of at most {MAX_TEXT} characters",
                                     "string_too_long")
            where = (*loc, *_parts(k)) if dotted else (*loc, k)
            reject_oversized(v, where, dotted=dotted, depth=depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            reject_oversized(v, (*loc, i), dotted=dotted, depth=depth + 1)


def reject_unstorable(value: Any, loc: Loc) -> None:
    """Free-form parts of a request (base, vary, overrides, spec) hold only what can be
    stored: finite numbers (JSON bodies may carry NaN/Infinity, since Python's parser accepts
    them; no spec field wants one, and a JSON column cannot store one on PostgreSQL) and text
    without NUL or lone surrogates (server/text.py), in keys as in values."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(loc, "must be a finite number", "finite_number")
    if isinstance(value, str) and (problem := text_problem(value)):
        raise InvalidRequest(loc, problem, "string_unstorable")
    if isinstance(value, dict):
        for k, v in value.items():
            if problem := text_problem(k):
                raise InvalidRequest((*loc, k), f"key {problem}", "string_unstorable")
            reject_unstorable(v, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            reject_unstorable(v, (*loc, i))


def find_preset(name: str | None, loc: Loc = ("body", "preset")) -> Preset | None:
    if name is None:
        return None
    if name not in PRESETS:
        raise InvalidRequest(loc, f"unknown preset; known: {', '.join(PRESETS)}", "enum")
    return PRESETS[name]


def merge(base: dict[str, Any], overrides: dict[str, Any], loc: Loc) -> dict[str, Any]:
    """`overrides` (nested or dotted) applied over `base`; unknown keys raise at their loc."""
    reject_oversized(overrides, loc, dotted=True)
    reject_unstorable(overrides, loc)
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
    for paths, msg in limit_violations(spec, settings):
        raise InvalidRequest(locate_first(paths, origins, fallback), msg, "server_limit")
    return spec


def limit_violations(spec: RunSpec, s: Settings) -> Iterable[tuple[tuple[str, ...], str]]:
    """(fields, message) for every value over a server limit; the fields drive the value,
    most responsible first."""
    if spec.steps > s.max_steps:
        yield ("steps",), f"at most {s.max_steps} steps on this server (LANDSCOPE_MAX_STEPS)"
    widest = max(spec.layer_widths(), default=0)
    if widest > s.max_width:
        yield ("width",), (
            f"the widest layer would have {widest} units or channels; this server allows "
            f"{s.max_width} (LANDSCOPE_MAX_WIDTH)"
        )
    batches = [("batch_size", spec.batch_size), ("eval_batch_size", spec.eval_batch_size)]
    if spec.batch_size is None and spec.dataset == "gaussian_linear":
        batches.append(("n_samples", spec.n_samples))  # full batch: every sample at once
    for field, size in batches:
        if size is not None and size > s.max_batch:
            yield (field,), f"batches of at most {s.max_batch} on this server (LANDSCOPE_MAX_BATCH)"
    yield from cost_violations(estimate(spec), s)


def cost_violations(c: Cost, s: Settings) -> Iterable[tuple[tuple[str, ...], str]]:
    """The run's estimated cost (server/cost.py) against the cost limits."""
    checks = [
        ("params", c.params, s.max_params, "parameters", "LANDSCOPE_MAX_PARAMS", "{:,.0f}"),
        ("memory", c.memory_mb, s.max_memory_mb, "MiB of training memory (a batch's "
         "activations, weights, gradients, optimiser and probe state)",
         "LANDSCOPE_MAX_MEMORY_MB", "{:,.0f}"),
        ("dataset", c.dataset_mb, s.max_dataset_mb, "MiB of dataset in memory",
         "LANDSCOPE_MAX_DATASET_MB", "{:,.0f}"),
        ("cost_steps", c.cost_steps, s.max_cost_steps, "training-step units (steps x the "
         "probe floor, plus test evaluations)", "LANDSCOPE_MAX_COST_STEPS", "{:,.0f}"),
    ]
    for quantity, value, limit, what, setting, fmt in checks:
        # A plug-in's unknown quantities cannot be checked here (server/cost.py).
        if quantity not in c.unknown and f"{quantity}_mb" not in c.unknown and value > limit:
            yield c.drivers[quantity], (
                f"this run would need about {fmt.format(value)} {what}; this server allows "
                f"{fmt.format(limit)} ({setting})"
            )
