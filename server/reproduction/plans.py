"""What gets submitted: a paper's experiments, as the API takes them, at each scale.

- An `Experiment` is what gets submitted: a preset (or base + vary) per *scale*:
  `quick` (minutes on two CPU cores; what CI runs), `cpu` (the paper's small models in full,
  large ones at reduced scale on offline data) and `paper` (everything at the paper's scale;
  may want a GPU and archives). Figures made from the same runs share one experiment.
- A `Paper` is one reproduced paper: its experiments and figures (one module per paper in this
  package, found by registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from server.presets import get_preset
from server.spec import RunSpec, apply_overrides, build_spec, expand_vary

if TYPE_CHECKING:
    from server.reproduction.verdicts import Figure

Scale = Literal["quick", "cpu", "paper"]
SCALES: tuple[Scale, ...] = ("quick", "cpu", "paper")
NAME_PREFIX = "repro: "


# The seeds every reproduction experiment runs at each scale (issue 15: claims are judged per
# seed, "holds in k of n"). Three at quick and cpu scale; the paper's VGG-16 runs cost GPU hours,
# so one seed there unless a plan asks for more.
SEEDS: dict[str, tuple[int, ...]] = {"quick": (0, 1, 2), "cpu": (0, 1, 2), "paper": (0,)}


@dataclass(frozen=True)
class Plan:
    """One experiment as the API takes it (POST /experiments): preset, base (dotted keys),
    vary (keys replace the preset's vary keys of the same name), the seeds (varied as `seed`
    when more than one) and the analyses a worker runs on each run once it succeeds (None: the
    preset's own, () none; AnalysisSpec JSON, as ExperimentCreate.analyses takes them)."""

    preset: str
    base: dict[str, Any] = field(default_factory=dict)
    vary: dict[str, list[Any]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    analyses: tuple[dict[str, Any], ...] | None = None

    def _vary(self) -> dict[str, list[Any]]:
        vary = {k: list(v) for k, v in self.vary.items()}
        if len(self.seeds) > 1:
            vary["seed"] = list(self.seeds)
        elif self.seeds != (0,):
            raise ValueError("one seed other than 0: put it in base")
        return vary

    def body(self, name: str) -> dict[str, Any]:
        out = {"name": name, "preset": self.preset, "base": dict(self.base),
               "vary": self._vary()}
        if self.analyses is not None:
            out["analyses"] = [dict(a) for a in self.analyses]
        return out

    def specs(self, **extra: Any) -> list[RunSpec]:
        """The runs the server makes of `body` (the same merge and cross product)."""
        p = get_preset(self.preset)
        base = apply_overrides(p.base, {**self.base, **extra})
        vary = {k: v for k, v in {**p.vary, **self._vary()}.items() if k not in extra}
        return [build_spec(d) for d in expand_vary(base, vary)]


@dataclass(frozen=True)
class Experiment:
    key: str
    title: str  # e.g. "Fig 3b ICS (DLN)"
    plans: dict[str, Plan]  # by scale; a scale without a plan does not run it
    data: dict[str, str]  # by scale: the data and scale, in words, for the report

    def name(self, scale: Scale) -> str:
        """The experiment's name on the server, e.g. "repro: Fig 3b ICS (DLN) [quick]"."""
        return f"{NAME_PREFIX}{self.title} [{scale}]"


@dataclass(frozen=True)
class Paper:
    """One reproduced paper: what a module of this package exports as `PAPER`."""

    key: str  # the module's name, e.g. "santurkar2018"
    title: str  # e.g. "Santurkar et al. 2018"
    experiments: tuple[Experiment, ...]
    figures: tuple[Figure, ...]
    metric_keys: str  # every scalar key its checks read (the API takes globs)
    summary: str = ""  # one paragraph on the paper's findings, no numbers of ours
    citation: str = ""
