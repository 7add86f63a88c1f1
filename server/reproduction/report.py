"""The per-figure tables: a terminal report and the Markdown of docs/reproduction.md."""

from __future__ import annotations

from collections.abc import Sequence

from server.reproduction.plans import Scale
from server.reproduction.registry import EXPERIMENTS, PAPERS, paper_of
from server.reproduction.verdicts import FigureResult, Outcome


def mark(outcome: Outcome) -> str:
    """A claim's mark: "holds", "fails" or "no data" for one seed; over several, how many of
    the seeds that decide it it holds in: "holds in 3 of 3 seeds", "fails in 3 of 3 seeds"
    (holds in none), "holds in 2 of 3 seeds" where they disagree."""
    if len(outcome.seeds) <= 1 or outcome.status == "no data":
        return outcome.status
    if outcome.status == "fails":
        return f"fails in {outcome.n} of {outcome.n} seeds"
    return f"holds in {outcome.k} of {outcome.n} seeds"


def _by_paper(results: Sequence[FigureResult]) -> list[tuple[str, list[FigureResult]]]:
    out: dict[str, list[FigureResult]] = {}
    for res in results:
        out.setdefault(paper_of(res.figure).title, []).append(res)
    return list(out.items())


def report_text(results: Sequence[FigureResult], scale: Scale) -> str:
    """The per-figure table for a terminal: verdict, then each claim with both numbers."""
    lines = []
    for title, group in _by_paper(results) or [(", ".join(p.title for p in PAPERS), [])]:
        lines += [f"Reproduction of {title}, scale {scale!r}", ""]
        for res in group:
            f = res.figure
            exp = EXPERIMENTS[f.experiment]
            lines.append(f"Fig {f.id} ({f.model}) {f.title}: {res.verdict.upper()}")
            lines.append(f"  data: {exp.data[scale]}")
            seeds = exp.plans[scale].seeds if scale in exp.plans else ()
            if len(seeds) > 1:
                lines.append(f"  seeds: {', '.join(map(str, seeds))}, each claim judged per "
                             "seed; numbers are the median (range) over seeds")
            for c, o in res.outcomes:
                lines.append(f"  [{mark(o)}] {c.text}")
                lines.append(f"      paper: {c.paper}")
                lines.append(f"      ours:  {o.ours}")
            lines.append("")
    counts = {v: sum(r.verdict == v for r in results)
              for v in ("reproduced", "partly", "not reproduced", "no data")}
    lines.append(", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def report_markdown(results: Sequence[FigureResult], scale: Scale) -> str:
    """The same as a Markdown table (docs/reproduction.md)."""
    rows = ["| figure | claim | paper | ours | holds |", "| --- | --- | --- | --- | --- |"]
    for res in results:
        f = res.figure
        for i, (c, o) in enumerate(res.outcomes):
            head = f"**Fig {f.id}** ({f.model}): {res.verdict}" if i == 0 else ""
            rows.append(f"| {head} | {_cell(c.text)} | {_cell(c.paper)} | {_cell(o.ours)} | "
                        f"{mark(o)} |")
    return "\n".join(rows) + "\n"
