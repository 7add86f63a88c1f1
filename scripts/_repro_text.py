"""The prose of docs/reproduction.md that carries no number of ours: how verdicts are decided
and how to run a reproduction. Numbers here are the rules' own (the paper modules' thresholds
come from the papers' wording; see each module), never measurements."""

from __future__ import annotations

RULES = [
    "How to read it. Each figure's claims are the paper's, as we test them, with the paper's "
    "value and the statistic we compute. Every claim is checked on each seed's runs alone "
    "and reported as \"holds in k of n seeds\", with the median and range over seeds of each "
    "of its numbers. A claim *holds* when it holds in every seed that decides it, *fails* "
    "when it holds in none, and is *mixed* otherwise (never counted as holding); a seed "
    "whose runs are missing or unfinished is not among the n. A figure is *reproduced* when "
    "every claim holds, *not reproduced* when every claim fails or its *premise* (a condition "
    "of the paper's setting, such as both nets training) fails, *partly* otherwise "
    "(server/reproduction/verdicts.py). The thresholds each check applies are fixed from the "
    "paper's wording, in the paper's module under server/reproduction/.",
]

HOW_TO_RUN = [
    "## How to run it", "",
    "This page, its figures and its results file, from scratch (trains every experiment of "
    "every paper in the catalogue at the scale, in this process, then the DLN in both "
    "precisions; `--jobs` runs train at once):", "",
    "```bash",
    "scripts/make_reproduction_doc.py --scale quick --jobs 2",
    "scripts/make_reproduction_doc.py run --scale cpu --out results/cpu    # or in two steps",
    "scripts/make_reproduction_doc.py write results/cpu --scale cpu",
    "```", "",
    "Through the service, so that the results land in the database and show in the "
    "dashboard's Reproduction page (verdicts as above, figures drawn live):", "",
    "```bash",
    "landscope up                                   # in one terminal",
    "landscope reproduce --quick                    # CI size",
    "landscope reproduce --scale paper --device cuda   # what wants a GPU and the archives",
    "landscope reproduce --report [--scale S] [--out table.md]   # verdicts of the newest "
    "results",
    "```", "",
    "Without a server and without this page: `scripts/reproduce_figures.py run` trains the "
    "catalogue into `landscope train`'s layout and `scripts/reproduce_figures.py render` "
    "draws the figures (with the dashboard's own figure builders, in headless chromium) and "
    "prints the verdicts. tests/docs/test_reproduction_doc.py retrains the cheapest "
    "experiment's first seed from the results file beside this page and fails if the page "
    "disagrees.", "",
]


def dtype_intro(scale: str, experiments: list[str]) -> str:
    keys = ", ".join(f"`{k}`" for k in experiments)
    return (
        f"The deep linear network's experiments ({keys}) at scale `{scale}`, trained in "
        "float32 and in float64 (spec key `dtype`; both start from the same weights, "
        "initialised in float32 and cast), judged by the same checks. The DLN's catalogue "
        "runs are float64: it has few parameters, and its dynamics amplify rounding. Each "
        "row: a claim's verdict and numbers in each precision, and the largest relative "
        "difference between the two medians of one of its numbers (which number).")
