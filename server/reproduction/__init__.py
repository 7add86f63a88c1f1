"""Paper reproductions: which experiments make which of a paper's figures, what the paper
reports for each, and the checks that turn our measurements into a verdict.

Pure data and pure functions over metric series (no torch, no HTTP), so the CLI
(`landscope reproduce`), the dashboard's Reproduction page, scripts/reproduce_figures.py and
the tests share one definition. See docs/reproduction.md for the results.

One module per paper (santurkar2018.py: its experiments and figures, with its checks in
santurkar_checks.py), found by registry.py; what they share:
- plans.py: `Plan`, `Experiment`, `Paper` and the scales (what gets submitted);
- runs.py: `RunData` from the API or an in-process sink, `pick` (what comes back);
- stats.py: the statistics over a series (peak, median, tail, ratio...);
- verdicts.py: `Claim`, `Figure`, `evaluate` and the verdict rules, seed by seed (a claim
  "holds in k of n seeds", with the median and range of each number);
- report.py: the text and Markdown tables.

This module re-exports the names the rest of Landscope uses (`from server import reproduction
as R`; `R.EXPERIMENTS`, `R.evaluate`, ...).
"""

from __future__ import annotations

from server.reproduction.plans import NAME_PREFIX, SCALES, SEEDS, Experiment, Paper, Plan, Scale
from server.reproduction.registry import (
    EXPERIMENTS,
    FIGURE_BY_ID,
    FIGURES,
    METRIC_KEYS,
    PAPER_BY_KEY,
    PAPERS,
    claim,
    evaluate_all,
    experiments_for,
    figures_for,
    needs_analyses,
    needs_etas,
    paper_of,
    parse_name,
)
from server.reproduction.report import mark, report_markdown, report_text
from server.reproduction.runs import (
    AnalysisData,
    EtaPoint,
    MissingData,
    RunData,
    analysis_data_from_api,
    pick,
    run_data_from_api,
    run_data_from_memory,
)
from server.reproduction.stats import (
    TAIL,
    TIE,
    Spread,
    fmt,
    lower,
    median,
    peak,
    ratio,
    spread,
    step_changes,
    tail,
)
from server.reproduction.verdicts import (
    Claim,
    ClaimStatus,
    Figure,
    FigureResult,
    Outcome,
    Verdict,
    by_seed,
    combine,
    evaluate,
    select_runs,
    status_of,
    uses,
    verdict_from,
    verdict_of,
)

__all__ = [
    "SEEDS", "AnalysisData", "analysis_data_from_api",
    "EXPERIMENTS", "FIGURES", "FIGURE_BY_ID", "METRIC_KEYS", "NAME_PREFIX", "PAPERS",
    "PAPER_BY_KEY", "SCALES", "TAIL", "TIE", "Claim", "ClaimStatus", "EtaPoint", "Experiment",
    "Figure", "FigureResult", "MissingData", "Outcome", "Paper", "Plan", "RunData", "Scale",
    "Spread", "Verdict", "by_seed", "claim", "combine", "evaluate", "evaluate_all",
    "experiments_for", "figures_for", "fmt", "lower", "mark", "median", "needs_analyses",
    "needs_etas",
    "paper_of", "parse_name", "peak", "pick", "ratio", "report_markdown", "report_text",
    "run_data_from_api", "run_data_from_memory", "select_runs", "spread", "status_of",
    "step_changes", "tail", "uses", "verdict_from", "verdict_of",
]
