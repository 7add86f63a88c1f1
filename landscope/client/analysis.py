"""One analysis (GET /analyses/{id}) as numpy grids per step, and as a tidy DataFrame.

Grids are row-major as the API sends them: `loss[iy, ix]` is the point (x[ix], y[iy]); a
slice has one row. A point not stored yet (an analysis still running) is NaN in the grids and
False in `measured`, so it is never mistaken for a measured NaN (the network's loss did blow
up there): check `measured` before reading a NaN as divergence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from landscope.client.frames import decode, frame, to_float

GRIDS = ("loss", "acc", "test_loss", "test_acc")
TIDY_COLUMNS = ["analysis_id", "run_id", "step", "ix", "iy", "x", "y", *GRIDS]


def _grid(rows: list[list[Any]] | None) -> np.ndarray | None:
    if rows is None:
        return None
    return np.array([[to_float(v) for v in row] for row in rows], dtype=np.float64).reshape(
        len(rows), len(rows[0]) if rows else 0)


def _mask(rows: list[list[Any]] | None) -> np.ndarray | None:
    if rows is None:
        return None
    return np.array([[v is not None for v in row] for row in rows], dtype=bool).reshape(
        len(rows), len(rows[0]) if rows else 0)


@dataclass
class AnalysisStep:
    """What one analysed step holds. `x`/`y` are the axes (y None for a slice; both None for a
    spectrum); the grids are None when not measured (acc: not a classification; test_*: the
    spec did not ask for the test set). `values`: the non-grid results (spectrum, trajectory,
    directions...), non-finite strings turned back into floats. `environments`: each distinct
    environment the step was computed in (threads, determinism, precision, device, versions:
    docs/geometry.md, "Numerics"); empty for an analysis stored before they were recorded."""

    step: int
    x: np.ndarray | None
    y: np.ndarray | None
    loss: np.ndarray | None
    acc: np.ndarray | None
    test_loss: np.ndarray | None
    test_acc: np.ndarray | None
    measured: np.ndarray | None  # True where a point is stored (the loss grid's mask)
    values: dict[str, Any] = field(default_factory=dict)
    environments: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, step: int, d: dict[str, Any]) -> AnalysisStep:
        x, y = d.get("x"), d.get("y")
        return cls(step=step,
                   x=np.asarray(x, dtype=np.float64) if x is not None else None,
                   y=np.asarray(y, dtype=np.float64) if y is not None else None,
                   loss=_grid(d.get("loss")), acc=_grid(d.get("acc")),
                   test_loss=_grid(d.get("test_loss")), test_acc=_grid(d.get("test_acc")),
                   measured=_mask(d.get("loss")), values=decode(d.get("values") or {}),
                   environments=list(d.get("environments") or []))


@dataclass
class Analysis:
    """An analysis with its results. `info` is the summary as GET /analyses lists it (spec,
    status, progress, cost, times); `steps` maps each analysed step to its grids and values."""

    id: int
    run_id: int
    kind: str
    bn_mode: str
    status: str
    spec: dict[str, Any]
    steps: dict[int, AnalysisStep]
    info: dict[str, Any]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Analysis:
        info = {k: v for k, v in d.items() if k != "steps"}
        steps = {int(s): AnalysisStep.from_json(int(s), v) for s, v in d.get("steps", {}).items()}
        return cls(id=d["id"], run_id=d["run_id"], kind=d["kind"], bn_mode=d["bn_mode"],
                   status=d["status"], spec=d.get("spec") or {}, steps=dict(sorted(steps.items())),
                   info=info)

    def at(self, step: int | None = None) -> AnalysisStep:
        """The results at `step`; by default at the last analysed step."""
        if not self.steps:
            raise LookupError(f"analysis {self.id} ({self.status}) has no analysed step yet")
        if step is None:
            return self.steps[max(self.steps)]
        if step not in self.steps:
            raise LookupError(f"analysis {self.id} has steps {sorted(self.steps)}, not {step}")
        return self.steps[step]

    def records(self) -> list[dict[str, Any]]:
        """One record per stored grid point, every step: the tidy form of the grids. Points not
        stored yet are absent (not NaN rows); a measured NaN stays NaN."""
        out = []
        for s in self.steps.values():
            if s.loss is None or s.x is None or s.measured is None:
                continue
            ys = s.y if s.y is not None else [math.nan]
            for iy, ix in zip(*np.nonzero(s.measured), strict=True):
                row = {"analysis_id": self.id, "run_id": self.run_id, "step": s.step,
                       "ix": int(ix), "iy": int(iy), "x": float(s.x[ix]), "y": float(ys[iy])}
                for name in GRIDS:
                    g = getattr(s, name)
                    row[name] = float(g[iy, ix]) if g is not None else math.nan
                out.append(row)
        return out

    def frame(self):
        """The grid points as a DataFrame (TIDY_COLUMNS; needs pandas): pivot it back with
        `df[df.step == s].pivot(index="y", columns="x", values="loss")`."""
        return frame(self.records(), TIDY_COLUMNS)

    def __repr__(self) -> str:
        return (f"Analysis(id={self.id}, run_id={self.run_id}, kind={self.kind!r}, "
                f"bn_mode={self.bn_mode!r}, status={self.status!r}, steps={list(self.steps)})")
