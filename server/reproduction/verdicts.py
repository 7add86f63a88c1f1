"""Claims, figures and the rules that turn claim outcomes into a figure's verdict.

- A `Figure` names its experiment, the runs it uses (`select`), the dashboard figures that draw
  it, and its `Claim`s: the paper's value, our statistic, and the test deciding it.
- `evaluate(figure, runs)` gives a `FigureResult`: every claim's numbers and a verdict,
  "reproduced" (every claim holds), "partly", "not reproduced" (none holds, or the figure's
  premise, a condition of the paper's setting such as "both nets train", fails) or "no data".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from server.reproduction.runs import MissingData, RunData

Verdict = Literal["reproduced", "partly", "not reproduced", "no data"]


@dataclass(frozen=True)
class Outcome:
    ok: bool | None  # None: not decidable (missing runs or keys)
    ours: str  # our numbers, in words
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    id: str
    text: str  # the paper's claim, as we test it
    paper: str  # the paper's value (read off its figure) or "qualitative"
    statistic: str  # how our number is computed
    test: Callable[[list[RunData]], Outcome]

    def evaluate(self, runs: list[RunData]) -> Outcome:
        try:
            return self.test(runs)
        except MissingData as exc:
            return Outcome(None, f"no data: {exc}")


@dataclass(frozen=True)
class Figure:
    id: str  # "3b", "10", "4-mlp"
    title: str
    model: str  # "DLN", "VGG", "MLP"
    experiment: str  # Experiment.key
    claims: tuple[Claim, ...]
    select: dict[str, Any] = field(default_factory=dict)  # the experiment's runs it uses
    plots: tuple[str, ...] = ()  # webapp.figures names that draw it
    layers: tuple[int, ...] = ()  # activation figures: the normalised layers shown
    choices: tuple[str, ...] = ()  # protocol choices made where the paper is silent
    beyond_paper: bool = False
    # A condition of the paper's setting the comparison rests on (e.g. both nets train): when
    # it fails, the figure is "not reproduced" whatever the other claims say.
    premise: Claim | None = None


@dataclass(frozen=True)
class FigureResult:
    figure: Figure
    verdict: Verdict
    outcomes: tuple[tuple[Claim, Outcome], ...]


def verdict_of(oks: Sequence[bool | None]) -> Verdict:
    """All hold: reproduced; none: not reproduced; some: partly. While some claims cannot be
    decided yet (runs missing or unfinished), only a claim that holds makes it "partly"."""
    decided = [ok for ok in oks if ok is not None]
    if not decided:
        return "no data"
    if len(decided) < len(oks):
        return "partly" if any(decided) else "no data"
    if all(decided):
        return "reproduced"
    return "partly" if any(decided) else "not reproduced"


def uses(figure: Figure, spec: Mapping[str, Any]) -> bool:
    """Whether a figure uses the run with this spec (JSON form): every `select` key equal (or
    in its list). The dashboard filters an experiment's runs (API JSON) with it."""
    for k, want in figure.select.items():
        options = want if isinstance(want, list) else [want]
        got = spec.get(k)
        if not any(got == w or (isinstance(w, float) and isinstance(got, int | float)
                                and math.isclose(got, w, rel_tol=1e-9)) for w in options):
            return False
    return True


def select_runs(figure: Figure, runs: Sequence[RunData]) -> list[RunData]:
    """The experiment's runs a figure uses."""
    return [r for r in runs if uses(figure, r.spec)]


def evaluate(figure: Figure, runs: Sequence[RunData]) -> FigureResult:
    """Every claim's outcome (the premise first, when the figure has one) and the verdict."""
    chosen = select_runs(figure, runs)
    claims = ((figure.premise,) if figure.premise else ()) + figure.claims
    outcomes = tuple((c, c.evaluate(chosen)) for c in claims)
    verdict = verdict_of([o.ok for c, o in outcomes if c is not figure.premise])
    if figure.premise and outcomes[0][1].ok is False:
        verdict = "not reproduced"
    return FigureResult(figure, verdict, outcomes)
