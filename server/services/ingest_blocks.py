"""Binary scalar blocks of an ingest batch (format 1, docs/api.md "Binary scalar blocks").

What the SDK sends since the JSON columns cost its sender (and this server's json.loads) a
float's text per point: per set of keys logged together, `n` steps as little-endian integers
and an n x len(keys) matrix of little-endian floats (one row per step), each base64 text:

    {"v": 1, "keys": ["train/loss", "acc"], "n": 2, "step_dtype": "<i4",
     "steps": "AAAAAAEAAAA=", "value_dtype": "<f8", "values": "..."}

Read with numpy.frombuffer: no Python object per point. Everything is checked before it is
used and refused with its field path; NaN and infinities are data. The columns come out as
numpy arrays, which server/db/metrics.insert_series takes as they are.
"""

from __future__ import annotations

import binascii
from typing import Any

import numpy as np

from server.services.errors import InvalidRequest

FORMATS = frozenset({1})
STEP_DTYPES = {"<i4": np.dtype("<i4"), "<i8": np.dtype("<i8")}
VALUE_DTYPES = {"<f8": np.dtype("<f8"), "<f4": np.dtype("<f4")}
FIELDS = ("v", "keys", "n", "step_dtype", "steps", "value_dtype", "values")
MAX_POINTS = 2_000_000  # scalar points in one body's blocks (the SDK cuts at 50,000)
INT32_MAX = 2**31 - 1

Columns = dict[str, tuple[Any, Any]]  # key -> (steps, values): lists or numpy arrays


def parse_blocks(blocks: list, loc: tuple, out: Columns, *, max_keys: int,
                 check_key: Any) -> None:
    """Every block of `blocks` (a JSON list) into `out`; `check_key(value, loc)` checks a
    key as the JSON columns' keys are checked. Keys over all blocks: at most `max_keys`."""
    keys_seen = 0
    points = 0
    for i, b in enumerate(blocks):
        where = (*loc, i)
        keys, steps, values = _block(b, where, check_key)
        keys_seen += len(keys)
        if keys_seen > max_keys:
            raise InvalidRequest((*where, "keys"), f"at most {max_keys} keys in one batch",
                                 "too_long")
        points += values.size
        if points > MAX_POINTS:
            raise InvalidRequest((*where, "n"), f"at most {MAX_POINTS} points in one batch's "
                                 "blocks; send several batches", "too_long")
        for j, key in enumerate(keys):
            merge(out, key, steps, values[:, j])


def merge(out: Columns, key: str, steps: Any, values: Any) -> None:
    """Add a column to `out`; the same key twice in one batch is one column."""
    if key not in out:
        out[key] = (steps, values)
        return
    old_steps, old_values = out[key]
    if isinstance(old_steps, list) and isinstance(steps, list):
        old_steps.extend(steps)
        old_values.extend(values)
    else:
        out[key] = (np.concatenate([np.asarray(old_steps, np.int64), steps]),
                    np.concatenate([np.asarray(old_values, np.float64), values]))


def _block(b: Any, loc: tuple, check_key: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    if not isinstance(b, dict):
        raise InvalidRequest(loc, "an object", "dict_type")
    if (extra := next((k for k in b if k not in FIELDS), None)) is not None:
        raise InvalidRequest((*loc, extra), "unknown field; expected one of "
                             + ", ".join(sorted(FIELDS)), "extra_forbidden")
    for k in FIELDS:
        if k not in b:
            raise InvalidRequest((*loc, k), "field required", "missing")
    v = b["v"]
    if type(v) is not int or v not in FORMATS:
        raise InvalidRequest((*loc, "v"), "a block format this server reads: "
                             + ", ".join(map(str, sorted(FORMATS))), "block_format")
    keys = b["keys"]
    if not isinstance(keys, list) or not keys:
        raise InvalidRequest((*loc, "keys"), "a non-empty array of metric names", "list_type")
    for j, key in enumerate(keys):
        check_key(key, (*loc, "keys", j))
    if len(set(keys)) != len(keys):
        dup = next(j for j, k in enumerate(keys) if k in keys[:j])
        raise InvalidRequest((*loc, "keys", dup), "a key appears twice in one block",
                             "duplicate")
    n = b["n"]
    if type(n) is not int or not 0 <= n <= MAX_POINTS:
        raise InvalidRequest((*loc, "n"), f"an integer in [0, {MAX_POINTS}]", "int_range")
    if n * len(keys) > MAX_POINTS:
        raise InvalidRequest((*loc, "n"), f"at most {MAX_POINTS} points in one batch's "
                             "blocks; send several batches", "too_long")
    step_dtype = _dtype(b["step_dtype"], STEP_DTYPES, (*loc, "step_dtype"))
    value_dtype = _dtype(b["value_dtype"], VALUE_DTYPES, (*loc, "value_dtype"))
    steps = np.frombuffer(_bytes(b["steps"], n * step_dtype.itemsize, (*loc, "steps"),
                                 f"{n} steps of {step_dtype.itemsize} bytes"), step_dtype)
    raw = _bytes(b["values"], n * len(keys) * value_dtype.itemsize, (*loc, "values"),
                 f"{n} x {len(keys)} values of {value_dtype.itemsize} bytes")
    bad = (steps < 0) | (steps > INT32_MAX)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidRequest((*loc, "steps", i), f"a step is an integer in [0, {INT32_MAX}]",
                             "step")
    values = np.frombuffer(raw, value_dtype).astype(np.float64).reshape(n, len(keys))
    return keys, steps.astype(np.int64), values


def _dtype(tag: Any, allowed: dict[str, np.dtype], loc: tuple) -> np.dtype:
    if not isinstance(tag, str) or tag not in allowed:
        raise InvalidRequest(loc, "one of " + ", ".join(allowed), "enum")
    return allowed[tag]


def _bytes(text: Any, size: int, loc: tuple, what: str) -> bytes:
    """Strict base64 of exactly `size` bytes; checked by length before it is decoded."""
    if not isinstance(text, str):
        raise InvalidRequest(loc, "base64 text", "string_type")
    if len(text) != 4 * -(-size // 3):
        raise InvalidRequest(loc, f"{what}: {size} bytes, as base64 {4 * -(-size // 3)} "
                             f"characters, not {len(text)}", "length")
    try:
        data = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidRequest(loc, f"not valid base64: {exc}", "base64") from None
    if len(data) != size:  # the padding said otherwise
        raise InvalidRequest(loc, f"{what}: {size} bytes, not {len(data)}", "length")
    return data
