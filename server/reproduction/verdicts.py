"""Claims, figures and the rules that turn claim outcomes, seed by seed, into a verdict.

- A `Figure` names its experiment, the runs it uses (`select`), the dashboard figures that draw
  it, and its `Claim`s: the paper's value, our statistic, and the test deciding it.
- `evaluate(figure, runs)` gives a `FigureResult`: every claim's numbers and a verdict,
  "reproduced" (every claim holds), "partly", "not reproduced" (none holds, or the figure's
  premise, a condition of the paper's setting such as "both nets train", fails) or "no data".

Seeds. A figure's runs may come in several seeds (the same runs with only `seed` changed).
Each claim is judged per seed, on that seed's runs alone, and reported as "holds in k of n
seeds" with the median and range over seeds of each of its numbers (`combine`). The rules:
- a claim *holds* when it holds in every seed that decides it, *fails* when it holds in none,
  and is *mixed* otherwise (`status_of`): a seed against the paper is a result to show, not
  noise to outvote, so a mixed claim never counts as holding;
- a seed that cannot decide a claim (runs missing or unfinished) is not among the n, and
  leaves the claim not final;
- a figure (`verdict_from`) is "reproduced" when every claim holds, "not reproduced" when every
  claim fails, "partly" otherwise; while some claim is not final, "partly" if some claim holds
  in some seed, else "no data";
- a premise is judged per seed too: when it fails in every seed that decides it the figure is
  "not reproduced"; when it is mixed, the claims are judged only on the seeds where it does
  not fail, and the figure is at most "partly".
One seed (every run so far) gives exactly the outcome of the claim's own check, text included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from server.reproduction.runs import MissingData, RunData
from server.reproduction.stats import Spread, fmt, spread

Verdict = Literal["reproduced", "partly", "not reproduced", "no data"]
ClaimStatus = Literal["holds", "fails", "mixed", "no data"]


@dataclass(frozen=True)
class Outcome:
    """A claim's outcome: from one check, or `combine`d over seeds (then `values` are the
    medians over seeds, `spread` their ranges, `seeds` each seed's own outcome)."""

    ok: bool | None  # None: not decidable (missing runs or keys); over seeds: holds in all
    ours: str  # our numbers, in words
    values: dict[str, float] = field(default_factory=dict)
    seeds: tuple[tuple[Any, Outcome], ...] = ()
    spread: dict[str, Spread] = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Seeds where the claim holds."""
        if not self.seeds:
            return int(self.ok is True)
        return sum(o.ok is True for _, o in self.seeds)

    @property
    def n(self) -> int:
        """Seeds that decide the claim."""
        if not self.seeds:
            return int(self.ok is not None)
        return sum(o.ok is not None for _, o in self.seeds)

    @property
    def status(self) -> ClaimStatus:
        return status_of(self.k, self.n)

    @property
    def final(self) -> bool:
        """Every seed decides the claim (more runs finishing cannot change it)."""
        return self.n == max(1, len(self.seeds))


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


def status_of(k: int, n: int) -> ClaimStatus:
    """The k-of-n rule: of the n seeds that decide a claim, it holds in k."""
    if n == 0:
        return "no data"
    if k == n:
        return "holds"
    return "fails" if k == 0 else "mixed"


def verdict_from(outcomes: Sequence[Outcome]) -> Verdict:
    """A figure's verdict from its claims' outcomes (one seed or several; see the module's
    doc). For single-seed outcomes it is verdict_of([o.ok ...])."""
    statuses = [o.status for o in outcomes]
    if all(s == "no data" for s in statuses):
        return "no data"
    if not all(o.final for o in outcomes):
        return "partly" if any(s in ("holds", "mixed") for s in statuses) else "no data"
    if all(s == "holds" for s in statuses):
        return "reproduced"
    if all(s == "fails" for s in statuses):
        return "not reproduced"
    return "partly"


def seed_of(run: RunData) -> Any:
    return run.spec.get("seed")


def by_seed(runs: Sequence[RunData]) -> dict[Any, list[RunData]]:
    """Runs grouped by their spec's seed, seeds ascending (runs without one last, together)."""
    groups: dict[Any, list[RunData]] = {}
    for r in runs:
        groups.setdefault(seed_of(r), []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def combine(per_seed: Sequence[tuple[Any, Outcome]], note: str = "") -> Outcome:
    """One claim's outcomes in several seeds as one: `ok` True when it holds in every seed
    that decides it, False when not (`status` tells "fails" from "mixed"), None when no seed
    decides it; `values` the medians over the deciding seeds, `spread` median and range.
    A single seed (and no note) gives that seed's outcome as it is."""
    per_seed = tuple(per_seed)
    if not per_seed:
        raise ValueError("combine needs at least one seed")
    if len(per_seed) == 1 and not note:
        o = per_seed[0][1]
        return Outcome(o.ok, o.ours, dict(o.values), seeds=per_seed)
    decided = [(s, o) for s, o in per_seed if o.ok is not None]
    if not decided:
        why = "; ".join(dict.fromkeys(o.ours for _, o in per_seed))
        return Outcome(None, why, seeds=per_seed)
    k, n = sum(o.ok is True for _, o in decided), len(decided)
    keys = dict.fromkeys(key for _, o in decided for key in o.values)
    spreads = {key: spread([o.values[key] for _, o in decided if key in o.values])
               for key in keys}
    head = f"holds in {k} of {n} seeds"
    if 0 < k < n:
        head += f" (not in seed {', '.join(str(s) for s, o in decided if not o.ok)})"
    parts = [head]
    if n < len(per_seed):
        parts.append(f"{len(per_seed) - n} more not decided yet")
    if note:
        parts.append(note)
    numbers = "; ".join(f"{key} {fmt(sp.median)} ({fmt(sp.lo)} to {fmt(sp.hi)})"
                        for key, sp in spreads.items())
    text = ", ".join(parts) + (f"; median (range) over seeds: {numbers}" if numbers else "")
    return Outcome(k == n, text, {key: sp.median for key, sp in spreads.items()},
                   seeds=per_seed, spread=spreads)


def evaluate(figure: Figure, runs: Sequence[RunData]) -> FigureResult:
    """Every claim's outcome over the seeds of the figure's runs (the premise first, when the
    figure has one) and the verdict (rules in the module's doc)."""
    groups = by_seed(select_runs(figure, runs)) or {None: []}
    outcomes: list[tuple[Claim, Outcome]] = []
    seeds, note, premise = groups, "", None
    if figure.premise:
        premise = combine([(s, figure.premise.evaluate(rs)) for s, rs in groups.items()])
        outcomes.append((figure.premise, premise))
        if premise.status == "mixed":
            seeds = {s: groups[s] for s, o in premise.seeds if o.ok is not False}
            note = (f"judged on the {len(seeds)} seed{'s' * (len(seeds) != 1)} where the "
                    "premise does not fail")
    outcomes += [(c, combine([(s, c.evaluate(rs)) for s, rs in seeds.items()], note))
                 for c in figure.claims]
    verdict = verdict_from([o for c, o in outcomes if c is not figure.premise])
    if premise is not None and premise.status == "fails":
        verdict = "not reproduced"
    elif premise is not None and premise.status == "mixed" and verdict == "reproduced":
        verdict = "partly"
    return FigureResult(figure, verdict, tuple(outcomes))
