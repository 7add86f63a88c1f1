"""The Landscape tab's launch form as plain data: field values -> the AnalysisSpec JSON the
server takes, or an error per field that cannot be used, stated as the constraint itself
("1 to 101 points"); and a 422's `loc` -> the field it is about.

The bounds are read from the server's own spec (server/analysis_spec.py is pydantic, no
torch), never typed again here, so the form and the API cannot disagree. The number fields
are text inputs on purpose: a dcc.Input of type "number" sends None for whatever the browser
finds invalid (outside min/max, "1e", "--3"), exactly as for an empty field, and an invalid
number then silently became the default.

An empty field means its default, and the form says so next to the field: Steps the run's
last step, Grid points the kind's default, Evaluation samples the spec's default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from server.analysis_spec import (
    DEFAULT_POINTS,
    MAX_STEP,
    MAX_STEPS_PER_ANALYSIS,
    AnalysisSpec,
    Axis,
    Directions,
)
from webapp.client import ApiError
from webapp.form_errors import errors_by_field
from webapp.form_numbers import field_bounds

FORM = "form"  # an error about no single field
# The fields that have an error line of their own (ls-<name>-error); errors about the others
# (kind, directions, BN mode: choices that cannot be wrong alone) go to the cost panel.
OWN_LINE = ("steps", "points", "samples", "seed")
LABELS = {"kind": "Kind", "steps": "Steps", "dir": "Directions",
          "points": "Grid points per axis", "bn": "BN mode", "samples": "Evaluation samples",
          "seed": "Direction seed", "options": "Options"}
# The Options checklist's values: evaluate on the test set too; move 1-D parameters too.
TEST_SET, KEEP_1D = "test_set", "keep_1d"
# Spec key (first part of a 422's loc under body.spec) -> the form field that sets it.
SPEC_FIELD = {"kind": "kind", "steps": "steps", "directions": "dir", "x": "points",
              "y": "points", "bn_mode": "bn", "eval_samples": "samples",
              "test_set": "options"}


def bounds(info: FieldInfo) -> tuple[int, int]:
    """(ge, le) of an integer field of the server's spec."""
    b = field_bounds(info)
    return int(b.lo), int(b.hi)


POINTS = bounds(Axis.model_fields["points"])
SEED_BOUNDS = field_bounds(Directions.model_fields["seed"])
SAMPLES = bounds(AnalysisSpec.model_fields["eval_samples"])
DEFAULT_SAMPLES: int = AnalysisSpec.model_fields["eval_samples"].default


def default_points(kind: str | None) -> int | None:
    """Grid points per axis when the field is empty; None for a spectrum (no grid)."""
    kind = kind or "surface"
    return None if kind == "spectrum" else DEFAULT_POINTS.get(kind)


class FormError(ValueError):
    """Fields that cannot be used: {field: what it must be}."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__(summary(errors))


def summary(errors: dict[str, str]) -> str:
    """'Grid points per axis: 1 to 101 points, not 1,000; ...': each error with its field."""
    return "; ".join(f"{LABELS[f]}: {msg}" if f in LABELS else msg
                     for f, msg in errors.items())


def whole(value: Any, lo: int, hi: int, unit: str) -> int | None:
    """A whole number from lo to hi typed in a text field ('2048', '2,048'); None if empty.
    Raises ValueError with the constraint."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    if re.fullmatch(r"-?\d{1,3}(?:[,_]\d{3})+", text):  # thousands separators
        text = re.sub(r"[,_]", "", text)
    if not re.fullmatch(r"-?[0-9]+", text):
        raise ValueError(f"a whole number of {unit}, {lo:,} to {hi:,}")
    n = int(text)
    if not lo <= n <= hi:
        raise ValueError(f"{lo:,} to {hi:,} {unit}, not {n:,}")
    return n


def parse_seed(text: Any) -> int | None:
    """The direction seed: a whole number within the spec's bounds; empty -> None (the
    spec's default, one seed for the experiment)."""
    value = "" if text is None else str(text).strip()
    if not value:
        return None
    b = SEED_BOUNDS
    n = int(value) if value.isascii() and value.isdigit() else None
    if n is None or n < b.lo or n > b.hi or (b.hi_strict and n == b.hi):
        raise ValueError(f"a whole number from {b.lo:,.0f} to 2^63 - 1")
    return n


def parse_steps(text: Any) -> list[int] | None:
    """'0, 400 800' -> [0, 400, 800]; empty -> None (the last saved step)."""
    parts = [p for p in re.split(r"[,\s;]+", str(text or "").strip()) if p]
    if not parts:
        return None
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError("whole step numbers separated by commas, e.g. 0, 400, 800")
    steps = sorted({int(p) for p in parts})
    if steps[-1] > MAX_STEP:
        raise ValueError(f"steps from 0 to {MAX_STEP:,}, not {steps[-1]:,}")
    if len(steps) > MAX_STEPS_PER_ANALYSIS:
        raise ValueError(f"at most {MAX_STEPS_PER_ANALYSIS} steps per analysis, "
                         f"not {len(steps)}")
    return steps


@dataclass
class Read:
    """What the form says: the spec JSON, or the errors by field (then spec is None)."""

    spec: dict[str, Any] | None
    errors: dict[str, str] = field(default_factory=dict)


def read(kind: str | None, steps: Any, direction: str | None, points: Any, bn: str | None,
         samples: Any, options: list[str] | None = None, seed: Any = None) -> Read:
    """Every field parsed (all their errors at once, not the first), then the spec checked
    as the server checks it. `options`: the Options checklist (TEST_SET, KEEP_1D); `seed`:
    the direction seed as typed (empty: the spec's, shared by the experiment's analyses)."""
    kind = kind or "surface"
    options = options or []
    errors: dict[str, str] = {}
    spec: dict[str, Any] = {"kind": kind, "bn_mode": bn or "batch"}

    def take(name: str, parse: Any, *args: Any) -> Any:
        try:
            return parse(*args)
        except ValueError as exc:
            errors[name] = str(exc)
            return None

    spec["steps"] = take("steps", parse_steps, steps)
    seed_n = take("seed", parse_seed, seed)
    if kind != "spectrum":  # a spectrum has no directions and no grid: the fields are unused
        spec["directions"] = {"kind": direction or "random"}
        if KEEP_1D in options:
            spec["directions"]["keep_1d"] = True
        if TEST_SET in options:
            spec["test_set"] = True
        n = take("points", whole, points, *POINTS, "points")
        if n is not None:
            axis: dict[str, Any] = {"points": n}
            if direction == "interpolation":
                axis.update(lo=-0.5, hi=1.5)  # the endpoints at 0 and 1, room either side
            spec["x"] = axis
            if kind in ("surface", "trajectory"):
                spec["y"] = dict(axis)
    if seed_n is not None:  # a spectrum's probe vectors are drawn from it too
        spec.setdefault("directions", {})["seed"] = seed_n
    n = take("samples", whole, samples, *SAMPLES, "samples")
    if n is not None:
        spec["eval_samples"] = n
    if errors:
        return Read(None, errors)
    try:
        AnalysisSpec.model_validate(spec)
    except ValidationError as exc:
        for e in exc.errors():
            errors.setdefault(field_of(("body", "spec", *e["loc"])), e["msg"])
        return Read(None, errors)
    return Read(spec)


def spec_of(*form: Any) -> dict[str, Any]:
    """The AnalysisSpec JSON the form describes; FormError when a field cannot be used."""
    got = read(*form)
    if got.spec is None:
        raise FormError(got.errors)
    return got.spec


def field_of(loc: tuple[str | int, ...] | list[str | int]) -> str:
    """A 422's loc (["body", "spec", "x", "points"]) -> the form field that sets it."""
    parts = [str(p) for p in loc]
    if parts[:2] != ["body", "spec"] or len(parts) < 3:
        return FORM
    if parts[2:4] == ["directions", "seed"]:
        return "seed"
    if parts[2:4] == ["directions", "keep_1d"]:
        return "options"
    return SPEC_FIELD.get(parts[2], FORM)


def api_errors(exc: ApiError) -> dict[str, str]:
    """A refused request's errors by field; its message at the form when it had none (a 409,
    a 401 with the token hint, no answer at all)."""
    return errors_by_field(exc, lambda loc, _msg: field_of(loc), FORM)
