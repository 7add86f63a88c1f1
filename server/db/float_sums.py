"""Sums of float8 in PostgreSQL SQL that overflow to infinity instead of raising an error.

PostgreSQL's float8 addition raises "value out of range: overflow" where IEEE arithmetic (and
SQLite, and numpy) gives +-inf, so two finite values near 1.8e308 in one rollup bucket would
turn a metric write, or a downsampled read, into an error. Values are data whatever their size,
so the rollup sums use these fragments instead of a bare `+` or `sum()`:

- `add(a, b)`: a + b when both are below half the largest float (the sum cannot overflow: the
  common case, bit for bit the plain addition), else the exact sum in numeric, rounded back to
  float8 or to +-inf (NaN stays NaN).
- `total(x)`: sum(x) over the values below 1e300 (fewer than 1.7e8 of them cannot overflow:
  bit for bit the plain sum when there is no larger one), plus the values from 1e300 up summed
  scaled by 2^-32 (exact: a power of two, far from subnormals), then combined as in add.

Only PostgreSQL needs them; SQLite's float sums already overflow to inf.
"""

from __future__ import annotations

_MAX = "1.7976931348623157e308"  # the largest float8, as a numeric literal
_HALF = "8.9e307"  # below this, a + b cannot overflow
_BIG = "1e300"  # from here, total() sums scaled copies
_SCALE = "4294967296.0"  # 2^32
_INV = "2.3283064365386963e-10"  # 2^-32, exactly


def _to_float(t: str) -> str:
    """A numeric expression back to float8: +-inf past the largest float, NaN kept."""
    return (f"(CASE WHEN ({t}) = 'NaN'::numeric THEN 'NaN'::float8 "
            f"WHEN ({t}) > {_MAX} THEN 'Infinity'::float8 "
            f"WHEN ({t}) < -{_MAX} THEN '-Infinity'::float8 ELSE ({t})::float8 END)")


def add(a: str, b: str) -> str:
    """SQL for a + b (float8, neither NULL) that never raises on overflow."""
    exact = _to_float(f"({a})::numeric + ({b})::numeric")
    return f"(CASE WHEN abs({a}) < {_HALF} AND abs({b}) < {_HALF} THEN {a} + {b} ELSE {exact} END)"


def total(x: str) -> str:
    """SQL for the aggregate sum(x) (float8; NULLs ignored, NULL when none) that never raises
    on overflow."""
    small = f"sum({x}) FILTER (WHERE abs({x}) < {_BIG})"
    big = f"sum({x} * {_INV}) FILTER (WHERE NOT abs({x}) < {_BIG})"
    exact = _to_float(f"coalesce({small}, 0)::numeric + ({big})::numeric * {_SCALE}")
    return f"(CASE WHEN {big} IS NULL THEN {small} ELSE {exact} END)"
