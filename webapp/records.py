"""What the API's read endpoints return, as the dashboard's figure code uses it: a run's series,
Fig 11's records, activation histograms and seed groups, decoded from JSON (non-finite numbers
arrive as the strings "NaN", "Infinity" and "-Infinity" and become floats here). webapp/client.py
fetches them and re-exports these names."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def to_float(v: Any) -> float | None:
    """A JSON number or one of the API's non-finite strings as a float; null stays None."""
    if v is None:
        return None
    return float(v)  # float("NaN"), float("Infinity"), float("-Infinity") all parse


@dataclass
class Series:
    """One metric key of one run. Raw: a value per step. Downsampled (`buckets`): steps are
    bucket midpoints, values bucket means over finite points (NaN where none was finite),
    lo/hi the finite envelope and `nonfinite` how many points of each bucket were not finite."""

    key: str
    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    buckets: bool = False
    lo: list[float | None] | None = None
    hi: list[float | None] | None = None
    nonfinite: list[int] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Series:
        values = [math.nan if v is None else float(v) for v in d.get("values", [])]
        return cls(
            key=d["key"],
            steps=list(d.get("steps", [])),
            values=values,
            buckets=bool(d.get("downsampled")),
            lo=d.get("min"),
            hi=d.get("max"),
            nonfinite=d.get("nonfinite"),
        )

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class EtaRecord:
    """One step size of one landscape probe (Fig 11)."""

    step: int
    multiplier: float
    eta: float
    loss: float
    grad_dist: float


@dataclass(frozen=True)
class Histogram:
    """Activations of one normalised layer (or its sampled unit) at one step."""

    layer: int
    scope: str
    step: int
    lo: float
    hi: float
    counts: list[int]
    underflow: int
    overflow: int
    nonfinite: int
    quantiles: dict[str, float]
    mean: float
    var: float

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Histogram:
        stats = d.get("stats") or {}
        quantiles = {k: to_float(v) for k, v in (stats.get("quantiles") or {}).items()}
        return cls(
            layer=d["layer"], scope=d["scope"], step=d["step"], lo=d["lo"], hi=d["hi"],
            counts=list(d["counts"]), underflow=d["underflow"], overflow=d["overflow"],
            nonfinite=d["nonfinite"], quantiles=quantiles,  # type: ignore[arg-type]
            mean=to_float(stats.get("mean", "NaN")),  # type: ignore[arg-type]
            var=to_float(stats.get("var", "NaN")),  # type: ignore[arg-type]
        )

    @property
    def total(self) -> int:
        return sum(self.counts) + self.underflow + self.overflow + self.nonfinite


@dataclass(frozen=True)
class Group:
    """Runs that differ only in their seed (GET /groups); `label` says what tells this group
    apart from the others of the same request."""

    key: str
    label: str
    run_ids: list[int]
    seeds: list[int | None]


@dataclass
class GroupSeries:
    """One key of one group (GET /groups/metrics), a bucket per entry on the request's grid:
    center (median or mean across the runs), lo/hi (min/max or mean -/+ std), n runs with a
    finite value, nonfinite runs whose points were all NaN or infinite. None where no run had
    a finite value; non-finite numbers as float nan/inf."""

    key: str
    steps: list[float] = field(default_factory=list)
    center: list[float | None] = field(default_factory=list)
    lo: list[float | None] = field(default_factory=list)
    hi: list[float | None] = field(default_factory=list)
    n: list[int] = field(default_factory=list)
    nonfinite: list[int] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GroupSeries:
        return cls(
            key=d["key"], steps=[float(s) for s in d["steps"]],
            center=[to_float(v) for v in d["center"]], lo=[to_float(v) for v in d["lo"]],
            hi=[to_float(v) for v in d["hi"]], n=list(d["n"]), nonfinite=list(d["nonfinite"]))

    def __len__(self) -> int:
        return len(self.steps)
