"""What the x of a figure counts: training steps, epochs, samples seen, or seconds of training.

Every metric is recorded against its step; the other axes are the same points moved to where
they lie in epochs, samples or seconds. A run knows its batch size and training set size
(RunOut.x_axis, written by the worker when training starts, or passed to landscope.init) and
records `time/wall_s`, seconds of training since it began, at sparse steps (about every 1 % of
the run, at each flush and at the last step: worker/engine/wallclock.py).

- epoch: step / (train_size // batch_size), the engine's epoch (worker/engine/data/batches.py
  drops an epoch's incomplete last batch); a full-batch run (batch_size None, or at least
  train_size) does one step per epoch. An SDK loop that keeps the short last batch has
  ceil(train_size / batch_size) steps per epoch: its epochs drift by under a step each.
- samples: step * batch_size (full batch: step * train_size), the samples seen before the
  step's update, as the metric at step t is measured at w_t.
- wall: `time/wall_s` linearly interpolated between its points. Outside them it goes on
  linearly with the rate of the nearest two points (after the last point: the recent rate,
  the one a running run keeps training at), never below 0 s. A single point at step s > 0
  extends to the origin (0 s before step 0). Fewer than that: no wall axis.

`x_values` is None where the run lacks what the axis needs; the page says so and draws steps.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

XAXES = ("step", "epoch", "samples", "wall")
XAXIS_TITLES = {"step": "training step", "epoch": "epoch", "samples": "samples seen",
                "wall": "wall time (s)"}


def _size(v: Any) -> int | None:
    """A positive int from the run JSON, else None (missing, null, 0, garbage)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 1:
        return None
    return int(v)


def samples_per_step(run: dict[str, Any]) -> int | None:
    """Samples each step trains on, or None when the run does not say."""
    xa = run.get("x_axis") or {}
    bs, n = _size(xa.get("batch_size")), _size(xa.get("train_size"))
    if bs is None or (n is not None and bs >= n):
        return n  # full batch: every sample, every step (None if the size is unknown)
    return bs


def steps_per_epoch(run: dict[str, Any]) -> int | None:
    xa = run.get("x_axis") or {}
    bs, n = _size(xa.get("batch_size")), _size(xa.get("train_size"))
    if n is None:
        return None
    if bs is None or bs >= n:
        return 1
    return n // bs


def wall_interpolator(wall: tuple[Sequence[float], Sequence[float]] | None):
    """A function step -> seconds from the (steps, seconds) of `time/wall_s`, or None when
    there is too little to interpolate (see the module docstring for the ends)."""
    if not wall:
        return None
    pts: dict[float, float] = {}
    for s, t in zip(wall[0], wall[1], strict=False):
        if s is None or t is None or not (math.isfinite(s) and math.isfinite(t)):
            continue
        pts[float(s)] = float(t)  # a repeated step: its last value
    xs = sorted(pts)
    ts = [pts[s] for s in xs]
    if len(xs) == 1 and xs[0] > 0:
        xs, ts = [0.0, xs[0]], [0.0, ts[0]]
    if len(xs) < 2:
        return None

    def at(step: float) -> float:
        if not math.isfinite(step):
            return math.nan
        i = bisect.bisect_right(xs, step)
        i = min(max(i, 1), len(xs) - 1)  # the segment [i-1, i], or the nearest end one
        x0, x1, t0, t1 = xs[i - 1], xs[i], ts[i - 1], ts[i]
        return max(0.0, t0 + (t1 - t0) * (step - x0) / (x1 - x0))

    return at


def x_values(steps: Sequence[float], axis: str, run: dict[str, Any],
             wall: tuple[Sequence[float], Sequence[float]] | None = None) -> list[float] | None:
    """The x of each step on `axis` for `run` (its RunOut JSON), or None when the run lacks
    what that axis needs. `wall`: the run's `time/wall_s` series as (steps, seconds)."""
    if axis not in XAXES:
        raise ValueError(f"x axis must be one of {', '.join(XAXES)}, got {axis!r}")
    if axis == "step":
        return [float(s) for s in steps]
    if axis == "epoch":
        per = steps_per_epoch(run)
        return None if per is None else [s / per for s in steps]
    if axis == "samples":
        per = samples_per_step(run)
        return None if per is None else [float(s * per) for s in steps]
    at = wall_interpolator(wall)
    return None if at is None else [at(float(s)) for s in steps]


__all__ = ["XAXES", "XAXIS_TITLES", "samples_per_step", "steps_per_epoch", "wall_interpolator",
           "x_values"]
