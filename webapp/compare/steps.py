"""The compare view's step range ("Steps from ... to ..."): text inputs read here.

They are text, not number inputs: a browser hands Dash None for any number it finds invalid
(a negative one under min=0, say), so a typo read as "no bound" and silently showed every
step. Read as text, a bad bound is still no bound, but the error beside the inputs says so.
"""

from __future__ import annotations

import math
from typing import Any

BAD = "steps are whole numbers from 0"


def parse_step(value: Any) -> int | None:
    """A bound as typed: a whole number >= 0 ("1000", "1e3", "20.0"), else None (empty, or
    invalid: step_error names it)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0 or number != int(number):
        return None
    return int(number)


def step_error(lo: Any, hi: Any) -> str:
    """What is wrong with the typed range ("" when nothing is)."""
    bad = [name for name, v in (("from", lo), ("to", hi))
           if v is not None and str(v).strip() and parse_step(v) is None]
    if bad:
        return f"{' and '.join(bad)}: {BAD}"
    a, b = parse_step(lo), parse_step(hi)
    if a is not None and b is not None and a > b:
        return f"from ({a}) is after to ({b})"
    return ""
