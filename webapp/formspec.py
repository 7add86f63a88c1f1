"""The new-experiment form as plain data: preset -> field values, field values -> the API's
POST /experiments body, a local check with the same spec code the server runs (server/spec.py
is torch-free), the probe cost of what would launch, and a 422's `loc` -> the form field.
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

# Form field -> the spec key it sets (the probe stride sets three probes' `every`).
STRIDE_KEYS = ("probes.landscape.every", "probes.ics.every", "probes.activations.every")
FIELD_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("model",), "vgg_config": ("vgg_config",), "width": ("width",),
    "depth": ("depth",), "dataset": ("dataset", "loss"), "norms": ("norm", "norm_groups"),
    "lrs": ("lr",), "steps": ("steps",), "batch": ("batch_size",), "seed": ("seed",),
    "stride": STRIDE_KEYS, "sharpness": ("probes.sharpness.every",),
    "eval_every": ("eval_every",), "multipliers": ("probes.landscape.multipliers",),
    "ics_layers": ("probes.ics.layers",), "device": ("device",),
}
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
    return {
        "name": "", "preset": preset["name"] if preset else None,
        "model": spec["model"], "vgg_config": spec["vgg_config"], "width": spec["width"],
        "depth": spec["depth"], "dataset": spec["dataset"],
        "norms": list(vary.get("norm", [spec["norm"]])), "lrs": _join(lrs),
        "steps": spec["steps"],
        "batch": "full" if spec["batch_size"] is None else str(spec["batch_size"]),
        "seed": spec["seed"], "stride": spec["probes.landscape.every"],
        "sharpness": spec["probes.sharpness.every"], "eval_every": spec["eval_every"],
        "multipliers": _join(spec["probes.landscape.multipliers"]),
        "ics_layers": _join(spec["probes.ics.layers"]), "device": spec["device"],
    }


def _numbers(text: Any, kind: type) -> list:
    parts = [p for p in re.split(r"[,\s]+", str(text or "").strip()) if p]
    out = [kind(p) for p in parts]  # ValueError on anything else
    if kind is float and any(not math.isfinite(v) for v in out):
        raise ValueError("not finite")
    return out


def parse(values: dict[str, Any]) -> Parsed:
    """Field values -> a POST /experiments body; fields that cannot even be read are errors."""
    errors: dict[str, str] = {}
    base: dict[str, Any] = {}

    def need(name: str, key: str) -> None:
        v = values.get(name)
        if v is None or v == "":
            errors[name] = "required"
        else:
            base[key] = v

    for name in ("model", "width", "dataset", "steps", "seed", "eval_every", "device"):
        need(name, FIELD_KEYS[name][0])
    if values.get("model") == "vgg":
        need("vgg_config", "vgg_config")
    else:
        need("depth", "depth")
    base["loss"] = "sum_squares" if values.get("dataset") == "gaussian_linear" \
        else "cross_entropy"
    batch = str(values.get("batch") or "").strip().lower()
    if batch in ("full", "none"):
        base["batch_size"] = None
    elif batch.isascii() and batch.isdigit():
        base["batch_size"] = int(batch)
    else:
        errors["batch"] = "a whole number, or 'full' for full-batch gradient descent"
    for name, kind, key in (("multipliers", float, "probes.landscape.multipliers"),
                            ("ics_layers", int, "probes.ics.layers")):
        try:
            base[key] = _numbers(values.get(name), kind)
        except ValueError:
            errors[name] = f"a comma-separated list of {'numbers' if kind is float else 'layers'}"
    for name, keys in (("stride", STRIDE_KEYS), ("sharpness", ("probes.sharpness.every",))):
        v = values.get(name)
        if v is None or v == "":
            errors[name] = "required (0 = off)"
        else:
            base.update({k: v for k in keys})
    vary: dict[str, list[Any]] = {"norm": list(values.get("norms") or [])}
    if not vary["norm"]:
        errors["norms"] = "choose at least one normalisation"
    try:
        lrs = _numbers(values.get("lrs"), float)
        if not lrs:
            raise ValueError
        if len(lrs) == 1:
            base["lr"] = lrs[0]
        else:
            vary["lr"] = lrs
    except ValueError:
        errors["lrs"] = "one or more learning rates, comma-separated"
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
