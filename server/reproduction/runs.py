"""What comes back: runs as the checks see them, from the API's JSON or an in-process sink.

Runs come in as `RunData` (a spec and its series), built from the API's JSON
(`run_data_from_api`) or from an in-process MemorySink (`run_data_from_memory`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EtaPoint:
    step: int
    multiplier: float
    eta: float
    loss: float
    grad_dist: float


@dataclass(frozen=True)
class AnalysisData:
    """One finished analysis of a run, as GET /analyses/{id} gives it: `steps` maps each
    analysed step to its AnalysisStep JSON (x, y, loss[iy][ix], acc, test_loss, test_acc,
    values; grids with non-finite values as floats here)."""

    kind: str  # "surface", "slice", "spectrum", "trajectory"
    bn_mode: str
    spec: dict[str, Any]
    steps: dict[int, dict[str, Any]]


@dataclass
class RunData:
    """One run as the checks see it: its spec (JSON form), status and series by key."""

    spec: dict[str, Any]
    series: dict[str, tuple[list[int], list[float]]]  # key -> (steps, values), step order
    status: str = "succeeded"
    etas: list[EtaPoint] = field(default_factory=list)
    name: str = ""
    analyses: list[AnalysisData] = field(default_factory=list)

    def analysis(self, kind: str, *, step: int | None = None, bn_mode: str | None = None
                 ) -> tuple[int, dict[str, Any]]:
        """(step, that step's results) of this run's analysis of `kind` (and `bn_mode`): at
        `step`, else the last analysed step; the newest analysis when several match."""
        for a in reversed(self.analyses):
            if a.kind != kind or (bn_mode is not None and a.bn_mode != bn_mode):
                continue
            if step is None and a.steps:
                last = max(a.steps)
                return last, a.steps[last]
            if step in a.steps:
                return step, a.steps[step]
        at = "" if step is None else f" at step {step}"
        mode = "" if bn_mode is None else f" (BN mode {bn_mode})"
        raise MissingData(f"{self.label()} has no {kind} analysis{mode}{at}")

    def values(self, key: str) -> list[float]:
        if key not in self.series or not self.series[key][1]:
            raise MissingData(f"{self.label()} has no {key}")
        return self.series[key][1]

    def label(self) -> str:
        return f"{self.spec.get('norm')} at LR {self.spec.get('lr'):g}"

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "diverged")


class MissingData(Exception):
    """A claim cannot be decided: a run or a key it needs is not there (yet)."""


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)  # "NaN", "Infinity" parse too


def _grid(rows: Any) -> Any:
    return None if rows is None else [[_float(v) for v in row] for row in rows]


def analysis_data_from_api(detail: Mapping[str, Any]) -> AnalysisData:
    """From GET /analyses/{id} (AnalysisDetail JSON): grids to floats (null and the strings
    "NaN", "Infinity" to float), steps to ints."""
    steps = {}
    for step, st in detail.get("steps", {}).items():
        st = dict(st)
        for g in ("loss", "acc", "test_loss", "test_acc"):
            st[g] = _grid(st.get(g))
        steps[int(step)] = st
    return AnalysisData(detail["kind"], detail.get("bn_mode", ""), dict(detail.get("spec", {})),
                        steps)


def run_data_from_api(run: Mapping[str, Any], metrics: Mapping[str, Any],
                      probes: Mapping[str, Any] | None = None,
                      analyses: Sequence[Mapping[str, Any]] = ()) -> RunData:
    """From GET /runs/{id}, /runs/{id}/metrics (raw, not downsampled), /runs/{id}/probes and
    GET /analyses/{id} of its succeeded analyses."""
    series = {}
    for key, s in metrics.get("series", {}).items():
        if s.get("downsampled"):
            raise ValueError(f"{key} came downsampled; ask for max_points above the step count")
        series[key] = (list(s["steps"]), [_float(v) for v in s["values"]])
    etas = [EtaPoint(r["step"], r["multiplier"], r["eta"], _float(r["loss"]),
                     _float(r["grad_dist"]))
            for r in (probes or {}).get("records", []) if r.get("probe", "landscape") ==
            "landscape"]
    return RunData(dict(run["spec"]), series, run["status"], etas, run.get("name", ""),
                   [analysis_data_from_api(a) for a in analyses])


def run_data_from_memory(spec: Mapping[str, Any], sink: Any, status: str = "succeeded",
                         name: str = "") -> RunData:
    """From a worker.engine MemorySink (duck-typed: `.series` {key: {step: value}} and
    `.etas` {probe: {step: [records]}})."""
    series = {k: (sorted(s), [s[t] for t in sorted(s)]) for k, s in sink.series.items()}
    etas = [EtaPoint(step, r.multiplier, r.eta, r.loss, r.grad_dist)
            for step, recs in sorted(sink.etas.get("landscape", {}).items()) for r in recs]
    return RunData(dict(spec), series, status, etas, name)


def pick(runs: Sequence[RunData], **where: Any) -> RunData:
    """The one run whose spec has these values (floats compared with a tolerance), among the
    runs of one seed (runs of several seeds matching is a ValueError)."""
    def match(r: RunData) -> bool:
        for k, v in where.items():
            got = r.spec.get(k)
            if isinstance(v, float) and isinstance(got, int | float):
                if not math.isclose(got, v, rel_tol=1e-9):
                    return False
            elif got != v:
                return False
        return True

    found = [r for r in runs if match(r)]
    if not found:
        raise MissingData(f"no run with {where}")
    if "seed" not in where and len({r.spec.get("seed") for r in found}) > 1:
        # A check sees one seed's runs (verdicts.evaluate groups them); handed several, it
        # would judge the first seed alone and call it the claim's outcome.
        raise ValueError(f"runs of several seeds match {where}: judge them with "
                         "verdicts.evaluate, which splits them by seed")
    if not found[0].finished:
        raise MissingData(f"run {found[0].label()} is {found[0].status}")
    return found[0]
