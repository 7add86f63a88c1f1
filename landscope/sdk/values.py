"""What run.log and init() accept, checked on the caller's thread, where a mistake can be
seen: a bad value found later by the sender would cost a whole batch (the server refuses it).

Checks are cheap on the hot path: keys are checked once per set of keys, values only when
they are not plain floats and ints.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

MAX_STEP = 2**31 - 1  # steps are 4-byte integers on the server
PLAIN = frozenset((float, int))


def as_step(step: Any) -> int:
    if type(step) is not int:
        try:
            step = int(step.__index__())  # ints, numpy ints, 0-d integer tensors
        except (AttributeError, TypeError):
            raise TypeError(f"step must be an integer, got {type(step).__name__}") from None
    if not 0 <= step <= MAX_STEP:
        raise ValueError(f"step must be >= 0 and <= {MAX_STEP}, got {step}")
    return step


MAX_KEY_CHARS = 200  # the server's metric_series.key


def check_keys(keys: tuple) -> None:
    for key in keys:
        if type(key) is not str or not key or len(key) > MAX_KEY_CHARS or "\x00" in key:
            raise TypeError(f"run.log: metric names must be non-empty strings of at most "
                            f"{MAX_KEY_CHARS} characters without NUL, got {key!r}")
        try:
            key.encode()
        except UnicodeEncodeError:
            raise TypeError(f"run.log: metric name {key!r} is not valid text") from None


def clean(keys: tuple[str, ...], values: tuple) -> tuple:
    """Values that are not plain numbers, made safe to hand over: tensors detached (a loss
    tensor would otherwise keep its whole autograd graph alive until the sender reads it,
    and is converted to float there: no device sync on the training thread)."""
    out = []
    for key, v in zip(keys, values, strict=True):
        t = type(v)
        if t is float or t is int:
            out.append(v)
        elif hasattr(v, "detach"):
            if v.numel() != 1:
                raise TypeError(f"run.log: {key!r} is a tensor of shape {tuple(v.shape)}; "
                                "log a single number (a 0-d or one-element tensor)")
            out.append(v.detach())
        else:
            try:
                if isinstance(v, str | bytes):  # float("1.0") would pass: a bug upstream
                    raise TypeError
                out.append(float(v))  # numpy scalars, bools, Decimals
            except (TypeError, ValueError):
                raise TypeError(f"run.log: {key!r} must be a number or a one-element tensor, "
                                f"got {t.__name__}") from None
    return tuple(out)


def as_config(config: Any) -> dict[str, Any]:
    """Whatever a researcher keeps a config in, as a JSON object: a dict, a dataclass, an
    argparse Namespace; values JSON lacks (paths, enums) by their text."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    elif not isinstance(config, Mapping) and hasattr(config, "__dict__"):
        config = vars(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict (or a dataclass / Namespace), got "
                        f"{type(config).__name__}")

    def words(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")
        if isinstance(x, dict):
            return {str(k): words(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [words(v) for v in x]
        return x

    return words(json.loads(json.dumps(dict(config), default=str)))


MAX_NAME_CHARS = 200  # runs.name, experiments.name


def as_name(value: Any, what: str) -> str:
    """A run or experiment name the server will store: checked at init, so an offline run
    does not learn at `landscope sync` time that its name was refused."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_CHARS or "\x00" in value:
        raise ValueError(f"{what} must be at most {MAX_NAME_CHARS} characters, without NUL")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} is not valid text") from None
    return value
