"""Points as numpy columns: the checks and conversions insert_series makes on its input, and
the (value, flag) encoding of models.encode_value, vectorised."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from server.db.models import FINITE, NAN, NEG_INF, POS_INF

INT4_MAX = 2**31 - 1  # steps are int4 on PostgreSQL


def steps_array(key: str, steps: Sequence[int]) -> np.ndarray:
    """Steps as int64, each a non-negative int4 (the column's type): a float or a huge step
    is refused rather than truncated or wrapped."""
    try:
        arr = np.asarray(steps)
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"metric {key!r}: steps must be integers ({exc})") from None
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise ValueError(f"metric {key!r}: steps must be a flat sequence of integers")
    # Negative steps are refused too: rollup buckets are step // width, which SQL and numpy
    # round differently below zero.
    if int(arr.min()) < 0 or int(arr.max()) > INT4_MAX:
        raise ValueError(f"metric {key!r}: steps must lie in [0, {INT4_MAX}]")
    return arr.astype(np.int64)


def values_array(key: str, values: Sequence[float]) -> np.ndarray:
    """Values as float64 (NaN and +-inf are data); anything that is not a flat sequence of
    numbers is refused with the key named."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metric {key!r}: values must be numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"metric {key!r}: values must be a flat sequence of numbers")
    return arr


def encoded(value: np.ndarray) -> tuple[list[float | None], list[int]]:
    """The (value, flag) columns of metric_points: encode_value, vectorised."""
    values = value.tolist()
    for i in np.flatnonzero(~np.isfinite(value)).tolist():
        values[i] = None
    return values, flags_of(value).tolist()


def flags_of(value: np.ndarray) -> np.ndarray:
    """metric_points.flag of each value (models.encode_value, vectorised)."""
    flag = np.full(len(value), FINITE, np.int16)
    flag[np.isnan(value)] = NAN
    flag[value == np.inf] = POS_INF
    flag[value == -np.inf] = NEG_INF
    return flag


def sorted_unique(sid: np.ndarray, step: np.ndarray, value: np.ndarray):
    """The rows ordered by (series, step), the first of any repeated (series, step) kept, as
    a single insert-ignore statement would: the index then fills page after page."""
    order = np.lexsort((step, sid))  # stable: equal keys keep their input order
    sid, step, value = sid[order], step[order], value[order]
    if len(sid) > 1:
        keep = np.empty(len(sid), bool)
        keep[0] = True
        np.logical_or(sid[1:] != sid[:-1], step[1:] != step[:-1], out=keep[1:])
        if not keep.all():
            sid, step, value = sid[keep], step[keep], value[keep]
    return sid, step, value
