"""`time/wall_s`: seconds of training since the run began, for a wall-time x-axis.

Sparse on purpose: a point at the first step, then one per WALL_POINTS-th of the planned steps
(about every 1 %), at each flush and at the last step; never one per step on a long run (the
dashboard interpolates steps to seconds between them). The count survives a resume: the
trainer stores `elapsed()` in each checkpoint and the resumed run starts from there, so the
series stays monotone across a pause. A crash loses the time of the steps it redoes, which is
the time the run would have taken without it.

Pure Python (no torch): the SDK's Run uses it too. Reading the clock changes nothing of the
training, so a run with and without these points is bit-identical (tests/engine/test_wallclock).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

WALL_KEY = "time/wall_s"
WALL_POINTS = 100  # periodic points over a run of known length (about every 1 %)


class WallClock:
    """Elapsed seconds from `base` (a resumed run's count) plus this process's time since
    construction, and which steps get a point."""

    def __init__(self, total_steps: int | None, base: float = 0.0,
                 points: int | None = WALL_POINTS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.base = float(base)
        self._clock = clock
        self._started = clock()
        # None: no periodic point (flushes and the end still get one)
        self.period: int | None = (
            None if points is None
            else max(1, math.ceil(total_steps / points)) if total_steps else 0
        )
        self.last_step: int | None = None  # the step of the newest point
        # The first step that gets a periodic point (public: the SDK's run.log compares it
        # inline, a method call per logged step being the larger cost).
        self.next_due: float = 0 if self.period is not None else math.inf

    def resume_after(self, step: int) -> None:
        """The sink already holds points up to `step` (a dead attempt's, past the checkpoint
        this run resumes from): the next point goes to the first step after it, never before
        it, where the stored points' larger seconds would make the series go back."""
        self.last_step = step
        self.next_due = step + 1

    def elapsed(self) -> float:
        return self.base + (self._clock() - self._started)

    def due(self, step: int) -> bool:
        """Whether step `step` (just trained) gets a periodic point: the first step seen, then
        one per period of steps (unknown length: one per 1 % of the steps so far, at least 10
        steps apart: about 100 points to step 1,000, then 230 more per factor of 10)."""
        return step >= self.next_due

    def point(self, step: int) -> dict[str, float] | None:
        """{WALL_KEY: seconds} for a point at `step`, or None if `step` already has one or is
        not after the newest point (the series only moves forward)."""
        if self.last_step is not None and step <= self.last_step:
            return None
        self.last_step = step
        if self.period:
            # the next step t with (t + 1) % period == 0: the last step of each period
            self.next_due = ((step + 1) // self.period + 1) * self.period - 1
        elif self.period == 0:  # length unknown: every 10 steps, then 1 % of the steps so far
            self.next_due = step + max(10, step // 100)
        return {WALL_KEY: self.elapsed()}
