"""The new-experiment form as plain data: preset -> field values, field values (numbers as
typed text, read here, so each field can say what it takes: the spec's bounds and the server's
limits on it) -> the API's POST /experiments body, a local check with the same spec code the
server runs (server/spec.py is torch-free), the probe cost of what would launch, and a 422's
`loc` -> the form field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from server.cost import estimate
from server.spec import (
    SHARPNESS_MIN_ITERS,
    RunSpec,
    SpecError,
    apply_overrides,
    build_spec,
    expand_vary,
    flatten,
)
from webapp.form_numbers import Bounds, describe, fmt, out_of_bounds, path_bounds, read_number

# Form field -> the spec key it sets (the probe stride sets three probes' `every`).
STRIDE_KEYS = ("probes.landscape.every", "probes.ics.every", "probes.activations.every")
FIELD_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("model",), "vgg_config": ("vgg_config",), "width": ("width",),
    "depth": ("depth",), "dataset": ("dataset", "loss"), "norms": ("norm", "norm_groups"),
    "lrs": ("lr",), "steps": ("steps",), "batch": ("batch_size",), "seed": ("seed",),
    "stride": STRIDE_KEYS, "sharpness": ("probes.sharpness.every",),
    "eval_every": ("eval_every",), "multipliers": ("probes.landscape.multipliers",),
    "ics_layers": ("probes.ics.layers",), "device": ("device",),
    "optimizer": ("optimizer",), "momentum": ("momentum",),
    "weight_decay": ("weight_decay",), "dtype": ("dtype",), "bf16": ("bf16",),
    "deterministic": ("deterministic",), "threads": ("threads",),
    "snapshot_every": ("snapshots.every",),
}
# The value a switch (a one-option checklist: bf16, deterministic) holds when it is on.
ON = "on"
SWITCHES = ("bf16", "deterministic")
KEY_FIELD = {key: f for f, keys in FIELD_KEYS.items() for key in keys}
FIELDS = ("name", "preset", *FIELD_KEYS)
FORM = "form"  # errors that belong to no single field


@dataclass
class Parsed:
    body: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)


def _join(values: list[Any]) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def values_from_preset(preset: dict[str, Any] | None) -> dict[str, Any]:
    """Every field's value: the spec defaults, overridden by the preset's base and vary."""
    base = preset["base"] if preset else {}
    vary = preset["vary"] if preset else {}
    spec = flatten(apply_overrides(RunSpec().model_dump(mode="json"), flatten(base)))
    lrs = vary.get("lr", [spec["lr"]])
    seeds = vary.get("seed", [spec["seed"]])
    return {
        "name": "", "preset": preset["name"] if preset else None,
        "model": spec["model"], "vgg_config": spec["vgg_config"], "width": spec["width"],
        "depth": spec["depth"], "dataset": spec["dataset"],
        "norms": list(vary.get("norm", [spec["norm"]])), "lrs": _join(lrs),
        "steps": spec["steps"],
        "batch": "full" if spec["batch_size"] is None else str(spec["batch_size"]),
        "seed": _join(seeds), "stride": spec["probes.landscape.every"],
        "sharpness": spec["probes.sharpness.every"], "eval_every": spec["eval_every"],
        "multipliers": _join(spec["probes.landscape.multipliers"]),
        "ics_layers": _join(spec["probes.ics.layers"]), "device": spec["device"],
        "optimizer": spec["optimizer"], "momentum": spec["momentum"],
        "weight_decay": spec["weight_decay"], "dtype": spec["dtype"],
        **{s: [ON] if spec[s] else [] for s in SWITCHES},
        "threads": "" if spec["threads"] is None else str(spec["threads"]),
        "snapshot_every": spec["snapshots.every"],
    }


def _numbers(text: Any, kind: type) -> list:
    parts = [p for p in re.split(r"[,\s]+", str(text or "").strip()) if p]
    out = [kind(p) for p in parts]  # ValueError on anything else
    if kind is float and any(not math.isfinite(v) for v in out):
        raise ValueError("not finite")
    return out


# The form's single-number fields and the spec path whose bounds they obey (the stride sets
# three probes alike: the landscape's bounds are theirs).
NUMBER_FIELDS = {"width": "width", "depth": "depth", "steps": "steps",
                 "eval_every": "eval_every", "stride": STRIDE_KEYS[0],
                 "sharpness": "probes.sharpness.every", "momentum": "momentum",
                 "weight_decay": "weight_decay", "snapshot_every": "snapshots.every"}
# What 0 means in these fields, said after the constraint (it switches the first three off).
OFF_FIELDS = {"stride": " (0 = off)", "sharpness": " (0 = off)", "eval_every": " (0 = off)",
              "snapshot_every": " (0 = the first and last step only)"}
# Fields a server limit (GET /limits) bounds directly, tighter than the spec: (limit, what
# it counts, setting). The server words its 422 the same way (server/services/specs.py).
FIELD_LIMITS = {"steps": ("max_steps", "steps", "LANDSCOPE_MAX_STEPS"),
                "batch": ("max_batch", "per batch", "LANDSCOPE_MAX_BATCH")}


def bounds(path: str) -> Bounds:
    """The RunSpec field's own bounds, so the form states the constraint the server will
    apply, in its words rather than pydantic's."""
    return path_bounds(RunSpec, path)


def number_error(name: str, v: Any, b: Bounds, limits: dict[str, Any]) -> str | None:
    """Why `v` does not fit field `name` (None when it does): "required" only when empty."""
    off = OFF_FIELDS.get(name, "")
    if v is None or (isinstance(v, str) and not v.strip()):
        return f"required{off}"
    try:
        x = read_number(v, b.whole)
    except (ValueError, OverflowError):
        return describe(b) + off
    if x < b.lo or (b.lo_strict and x == b.lo):
        return describe(b) + off
    limit_key, what, setting = FIELD_LIMITS.get(name, (None, "", ""))
    limit = (limits or {}).get(limit_key) if limit_key else None
    if limit is not None and x > limit and limit < b.hi:
        return f"at most {fmt(limit)} {what} on this server ({setting})"
    return out_of_bounds(x, b)


def _read_field(name: str, v: Any, path: str, limits: dict[str, Any]) -> tuple[Any, str | None]:
    b = bounds(path)
    err = number_error(name, v, b, limits)
    return (None, err) if err else (read_number(v, b.whole), None)


def switch_on(value: Any) -> bool:
    """A switch's value: its checklist's [ON] (or a plain bool, from code) is on."""
    return value is True or (isinstance(value, list | tuple) and ON in value)


def read_threads(v: Any) -> tuple[int | None, str | None]:
    """Torch threads: empty is the worker's own setting (None), else a whole number within
    the spec's bounds; (value, None) or (None, why not)."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None, None
    b = bounds("threads")
    try:
        x = read_number(v, whole=True)
    except (ValueError, OverflowError):
        x = None
    err = describe(b) if x is None else out_of_bounds(x, b)
    return (None, f"{err}, or empty for the worker's default") if err else (x, None)


def read_seeds(text: Any) -> list[int]:
    """'0, 1, 2' -> [0, 1, 2]: each a whole number the spec takes, each once."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)  # a form filled before seeds became a list
    b = bounds("seed")
    parts = [p for p in re.split(r"[,\s]+", str(text or "").strip()) if p]
    seeds = [read_number(p, whole=True) for p in parts]
    if not seeds or any(s < b.lo or s >= b.hi for s in seeds):
        raise ValueError(text)
    return seeds


def _varied(values: list[Any], key: str, preset: dict[str, Any] | None,
            base: dict[str, Any], vary: dict[str, list[Any]]) -> None:
    """One value goes to base, several to vary (one run each). A preset that varies the key
    would otherwise keep its own list over the one value: the value then goes to vary too."""
    if len(values) > 1 or key in ((preset or {}).get("vary") or {}):
        vary[key] = values
    else:
        base[key] = values[0]


def parse(values: dict[str, Any], limits: dict[str, Any] | None = None,
          preset: dict[str, Any] | None = None) -> Parsed:
    """Field values -> a POST /experiments body; fields that cannot be read, or that break a
    bound of the spec or a limit of this server (`limits`, GET /limits) that concerns them
    alone, are errors saying what the field takes."""
    errors: dict[str, str] = {}
    base: dict[str, Any] = {}
    limits = limits or {}

    def need(name: str, key: str) -> None:
        v = values.get(name)
        if v is None or v == "":
            errors[name] = "required"
        else:
            base[key] = v

    for name in ("model", "dataset", "device", "optimizer", "dtype"):
        need(name, FIELD_KEYS[name][0])
    if values.get("model") == "vgg":
        need("vgg_config", "vgg_config")
    adam = values.get("optimizer") == "adam"
    numbers = [n for n in NUMBER_FIELDS if not (n == "depth" and values.get("model") == "vgg")
               and not (n == "momentum" and adam)]
    for name in numbers:
        v, err = _read_field(name, values.get(name), NUMBER_FIELDS[name], limits)
        if err:
            errors[name] = err
        else:
            base.update({k: v for k in FIELD_KEYS[name]})
    if adam:
        base["momentum"] = 0.0  # torch's Adam has none: a preset's SGD momentum must not stay
    for name in SWITCHES:
        base[name] = switch_on(values.get(name))
    threads, err = read_threads(values.get("threads"))
    if err:
        errors["threads"] = err
    else:
        base["threads"] = threads
    base["loss"] = "sum_squares" if values.get("dataset") == "gaussian_linear" \
        else "cross_entropy"
    batch = values.get("batch")
    if str(batch if batch is not None else "").strip().lower() in ("full", "none"):
        base["batch_size"] = None
    else:
        v, err = _read_field("batch", batch, "batch_size", limits)
        if err:
            # what it takes, as every number field says it, and the one word it takes too
            errors["batch"] = f"{err}, or 'full' for full-batch gradient descent" \
                if err.startswith("a ") else err
        else:
            base["batch_size"] = v
    for name, kind, key in (("multipliers", float, "probes.landscape.multipliers"),
                            ("ics_layers", int, "probes.ics.layers")):
        try:
            base[key] = _numbers(values.get(name), kind)
        except ValueError:
            errors[name] = f"a comma-separated list of {'numbers' if kind is float else 'layers'}"
    vary: dict[str, list[Any]] = {"norm": list(values.get("norms") or [])}
    if not vary["norm"]:
        errors["norms"] = "choose at least one normalisation"
    try:
        lrs = _numbers(values.get("lrs"), float)
        if not lrs:
            raise ValueError
        _varied(lrs, "lr", preset, base, vary)
    except ValueError:
        errors["lrs"] = "one or more learning rates, comma-separated"
    try:
        seeds = read_seeds(values.get("seed"))
        if len(set(seeds)) < len(seeds):
            errors["seed"] = "each seed once"
        _varied(seeds, "seed", preset, base, vary)
    except (ValueError, OverflowError):
        errors["seed"] = "one or more whole numbers ≥ 0, comma-separated"
    body: dict[str, Any] = {"base": base, "vary": vary}
    if values.get("preset"):
        body["preset"] = values["preset"]
    if (values.get("name") or "").strip():
        body["name"] = values["name"].strip()
    return Parsed(body, errors)


def field_for_key(path: str, message: str = "") -> str:
    """The form field behind a spec path ('probes.landscape.every' -> 'stride'); for errors
    about the spec as a whole (no path) the first spec key the message names."""
    path = ".".join(p for p in path.split(".") if p and not (p.isascii() and p.isdigit()))
    while path:
        if path in KEY_FIELD:
            return KEY_FIELD[path]
        path = path.rpartition(".")[0]
    for key in sorted(KEY_FIELD, key=len, reverse=True):
        if re.search(rf"\b{re.escape(key)}\b", message):
            return KEY_FIELD[key]
    return FORM


def field_for_loc(loc: tuple[str | int, ...], message: str = "") -> str:
    """A 422 detail's loc (["body", "base", "steps"], ["body", "vary", "lr"]) -> a field."""
    parts = [str(p) for p in loc]
    if parts[:1] == ["body"]:
        parts = parts[1:]
    if not parts:
        return FORM
    head, rest = parts[0], ".".join(parts[1:])
    if head in ("name", "preset"):
        return head
    if head in ("base", "spec", "overrides", "vary"):
        return field_for_key(rest, message) if rest else (
            "norms" if head == "vary" else field_for_key("", message))
    return FORM


def local_check(body: dict[str, Any], preset: dict[str, Any] | None) -> tuple[
        list[RunSpec], dict[str, str]]:
    """Every run the body would launch, validated as the server validates (server limits
    aside); errors by field."""
    base = apply_overrides(preset["base"] if preset else {}, {})
    vary = {**(preset["vary"] if preset else {}), **body["vary"]}
    try:
        base = apply_overrides(base, body["base"])
        combos = expand_vary(base, vary)
        return [build_spec(c) for c in combos], {}
    except SpecError as exc:
        return [], {field_for_key(exc.path, exc.message): exc.message}


def cost(specs: list[RunSpec], limits: dict[str, Any] | None = None) -> dict[str, Any]:
    """What launching costs: runs, steps, extra passes per step by probe, the least
    slowdown against plain training (paper-protocol.md, "Cost floor"), and the estimates
    the server's limits check (server/cost.py) against `limits` (GET /limits)."""
    if not specs:
        return {}
    worst = max(specs, key=lambda s: s.probe_cost()["floor"])
    c = worst.probe_cost()
    p = worst.probes
    return {
        "runs": len(specs),
        "steps": sum(s.steps for s in specs),
        "passes": {k: v for k, v in c.items() if k != "floor"},
        "detail": {
            "landscape": (len(p.landscape.multipliers), p.landscape.every),
            "ics": (len(p.ics.layers), p.ics.every),
            # a range: it stops on its tolerance (RunSpec.probe_cost)
            "sharpness": (1 + 2 * min(SHARPNESS_MIN_ITERS, p.sharpness.max_iters),
                          p.sharpness.every, 1 + 2 * p.sharpness.max_iters),
        },
        "floor": c["floor"],
        "estimates": estimates(specs, limits or {}),
        "cost_steps_total": sum(estimate(s).cost_steps for s in specs),
    }


# (Cost attribute, label, the limit in GET /limits that bounds it, or None)
ESTIMATES: tuple[tuple[str, str, str | None], ...] = (
    ("params", "parameters", "max_params"),
    ("activation_mb", "activations (one batch), MiB", None),
    ("memory_mb", "training memory, MiB", "max_memory_mb"),
    ("dataset_mb", "dataset, MiB", "max_dataset_mb"),
    ("cost_steps", "cost in training steps", "max_cost_steps"),
)


def estimates(specs: list[RunSpec], limits: dict[str, Any]) -> list[dict[str, Any]]:
    """Per estimate, the largest over the runs, the server's limit (None when unknown or
    unlimited) and whether it is over: each run is checked on its own."""
    costs = [estimate(s) for s in specs]
    out = []
    for attr, label, limit_key in ESTIMATES:
        value = max(getattr(c, attr) for c in costs)
        limit = limits.get(limit_key) if limit_key else None
        out.append({"key": attr, "label": label, "value": value, "limit": limit,
                    "over": limit is not None and value > limit})
    return out
