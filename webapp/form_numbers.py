"""How a form field reads a typed number against a pydantic field of the server's specs: the
field's own bounds (Field(ge=..., le=...)), what it takes in words ('a whole number ≥ 1'), and
the typed text read as that number. Shared by the new-experiment form (webapp/formspec.py) and
the Landscape tab's launch form (webapp/landscape/form.py), so both say the constraint the
server will apply, in its words rather than pydantic's."""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Bounds:
    whole: bool
    lo: float
    lo_strict: bool  # lo itself is out (width > 0)
    hi: float
    hi_strict: bool


def _is_float(annotation: Any) -> bool:
    """float, or an optional float (float | None)."""
    if annotation is float:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return float in typing.get_args(annotation)
    return False


def field_bounds(info: FieldInfo) -> Bounds:
    """The bounds of any pydantic field of the server's specs (its ge/gt/le/lt metadata)."""
    b = {k: getattr(m, k) for m in info.metadata for k in ("ge", "gt", "le", "lt")
         if hasattr(m, k)}
    return Bounds(whole=not _is_float(info.annotation), lo=b.get("gt", b.get("ge", -math.inf)),
                  lo_strict="gt" in b, hi=b.get("lt", b.get("le", math.inf)),
                  hi_strict="lt" in b)


def path_bounds(model: Any, path: str) -> Bounds:
    """The bounds of a dotted field path of a pydantic model ('probes.ics.every')."""
    *parents, leaf = path.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    return field_bounds(model.model_fields[leaf])


def fmt(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:g}"


def describe(b: Bounds) -> str:
    """'a whole number ≥ 1', 'a number > 0': what the field takes."""
    return f"a {'whole ' if b.whole else ''}number {'>' if b.lo_strict else '≥'} {fmt(b.lo)}"


def read_number(v: Any, whole: bool) -> int | float:
    """A field's value as a number: the preset fills numbers, the user types text. ValueError
    for anything else (text, a fraction where a whole number is due, inf, nan)."""
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, str):
        text = v.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)  # exactly, however large (a float would round a big seed)
        if "_" in text:
            raise ValueError(v)  # float() takes '1_0'; nobody means that
        v = float(text)
    if not math.isfinite(v):
        raise ValueError(v)
    if whole and not float(v).is_integer():
        raise ValueError(v)
    return int(v) if whole else v


def out_of_bounds(x: float, b: Bounds) -> str | None:
    """Why the number `x` breaks `b` (None when it does not)."""
    if x < b.lo or (b.lo_strict and x == b.lo):
        return describe(b)
    if x > b.hi or (b.hi_strict and x == b.hi):
        return f"less than {fmt(b.hi)}" if b.hi_strict else f"at most {fmt(b.hi)}"
    return None
