"""Every reproduced paper, and the catalogue-wide look-ups over them.

A paper is a module of this package named like `santurkar2018` (letters, then a four-digit
year) that defines `PAPER` (plans.Paper): adding such a module is all it takes for the CLI,
the dashboard and scripts/reproduce_figures.py to run, judge and report it. Experiment keys,
experiment names, figure ids and claim ids must be unique across papers (checked here, at
import, so that a clash can never silently shadow another paper's entry).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from server.reproduction.plans import Experiment, Paper, Scale
from server.reproduction.runs import RunData
from server.reproduction.verdicts import Claim, Figure, FigureResult, evaluate

PAPER_MODULE = re.compile(r"^[a-z]+\d{4}[a-z]?$")


def _discover() -> tuple[Paper, ...]:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if PAPER_MODULE.fullmatch(m.name))
    papers = []
    for name in names:
        paper = importlib.import_module(f"{__package__}.{name}").PAPER
        if paper.key != name:
            raise ValueError(f"module {name} defines PAPER.key = {paper.key!r}")
        papers.append(paper)
    return tuple(papers)


def _unique(kind: str, items: Sequence[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for key, paper in items:
        if key in seen:
            raise ValueError(f"{kind} {key!r} is defined by both {seen[key]} and {paper}")
        seen[key] = paper


PAPERS: tuple[Paper, ...] = _discover()
_unique("experiment", [(e.key, p.key) for p in PAPERS for e in p.experiments])
_unique("experiment name", [(e.name(s), p.key) for p in PAPERS for e in p.experiments
                            for s in e.plans])
_unique("figure", [(f.id, p.key) for p in PAPERS for f in p.figures])
# A claim may serve several figures (Fig 4 and its MLP stand-in share theirs): one id, one
# Claim object.
_unique("claim", list({id(c): (c.id, p.key) for p in PAPERS for f in p.figures
                       for c in ((f.premise,) if f.premise else ()) + f.claims}.values()))

PAPER_BY_KEY: dict[str, Paper] = {p.key: p for p in PAPERS}
EXPERIMENTS: dict[str, Experiment] = {e.key: e for p in PAPERS for e in p.experiments}
FIGURES: tuple[Figure, ...] = tuple(f for p in PAPERS for f in p.figures)
FIGURE_BY_ID: dict[str, Figure] = {f.id: f for f in FIGURES}
_PAPER_OF_FIGURE: dict[str, Paper] = {f.id: p for p in PAPERS for f in p.figures}

# Every scalar key a check reads (the API takes globs).
METRIC_KEYS = ",".join(dict.fromkeys(k for p in PAPERS for k in p.metric_keys.split(",")))


def paper_of(figure: Figure) -> Paper:
    return _PAPER_OF_FIGURE[figure.id]


def experiments_for(scale: Scale) -> list[Experiment]:
    return [e for e in EXPERIMENTS.values() if scale in e.plans]


def parse_name(name: str) -> tuple[Experiment, Scale] | None:
    """The catalogue experiment and scale an experiment name stands for, or None."""
    for e in EXPERIMENTS.values():
        for s in e.plans:
            if e.name(s) == name:
                return e, s
    return None


def figures_for(scale: Scale) -> list[Figure]:
    return [f for f in FIGURES if scale in EXPERIMENTS[f.experiment].plans]


def claim(claim_id: str) -> Claim:
    for f in FIGURES:
        for c in (f.premise, *f.claims) if f.premise else f.claims:
            if c.id == claim_id:
                return c
    raise KeyError(claim_id)


def needs_etas(experiment_key: str) -> bool:
    """Whether a figure of this experiment reads the per-eta probe records (Fig 11)."""
    return any(f.experiment == experiment_key and "etas" in f.plots for f in FIGURES)


def needs_analyses(experiment_key: str, scale: Scale) -> bool:
    """Whether the experiment's plan at `scale` names analyses of its own (Plan.analyses
    non-empty): then its claims read them, so `landscope reproduce` waits for them and fetches
    them and scripts/reproduce_figures.py runs them. A plan left at None gets the preset's
    defaults on the server (the dashboard's surfaces and spectra) that no claim reads."""
    plan = EXPERIMENTS[experiment_key].plans.get(scale)
    return bool(plan is not None and plan.analyses)


def evaluate_all(scale: Scale, runs_by_experiment: Mapping[str, Sequence[RunData]]
                 ) -> list[FigureResult]:
    """Every figure of the scale, from the runs of each experiment (missing: no data)."""
    return [evaluate(f, list(runs_by_experiment.get(f.experiment, ())))
            for f in figures_for(scale)]
