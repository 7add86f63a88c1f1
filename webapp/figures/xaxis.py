"""TEMPORARY (h2-compare): a stand-in for contract B's x axes until h3-figmath's branch
lands; h3-figmath's module REPLACES this file at merge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

XAXES = ("step", "epoch", "samples", "wall")


def x_values(steps: Sequence[float], axis: str, run: dict[str, Any], *,
             wall: tuple[list[float], list[float]] | None = None) -> list[float] | None:
    if axis == "step":
        return [float(s) for s in steps]
    info = run.get("x_axis") or {}
    if axis in ("epoch", "samples"):
        train = info.get("train_size")
        batch = info.get("batch_size") or train
        if not batch or (axis == "epoch" and not train):
            return None
        per = batch / train if axis == "epoch" else batch
        return [float(s) * per for s in steps]
    if axis == "wall":
        if not wall or len(wall[0]) < 1:
            return None
        return [float(v) for v in np.interp(np.asarray(steps, float), wall[0], wall[1])]
    return None
