"""The numbers beside a spectrum request's figures: per run, at the shown step, the top
Hessian eigenvalue, the k it computed, the trace with its standard error, and the gradient's
share in the top-k eigenspace (Ghorbani et al. 2019: without BatchNorm the gradient lies
mostly in the outlier subspace), then the median of each normalisation when a normalisation
has several runs (seeds). Pure: (run, analysis detail) pairs in, a Dash table out."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from dash import html

from webapp.figures.geometry import chosen_step, finite, num, step_data
from webapp.figures.geometry_spectrum import spectrum_of
from webapp.runsets import RunView
from webapp.style import norm_label

COLUMNS = ("run", "step", "λ1", "λ2 … λk", "trace ± s.e.", "gradient share in top-k")


def spectrum_rows(items: Sequence[tuple[RunView, dict[str, Any]]], step: int | None
                  ) -> list[dict[str, Any]]:
    """One row per run with a spectrum at `step` (None: the last analysed step): its numbers
    as floats (None where absent), in the runs' order."""
    rows = []
    for run, detail in items:
        s = spectrum_of(step_data(detail, step))
        if s is None:
            continue
        top = [num(v) for v in s.get("top_eigenvalues") or []]
        rows.append({"run": run.label, "norm": run.norm, "step": chosen_step(detail, step),
                     "top": top, "l1": top[0] if top else None,
                     "trace": num(s.get("trace")), "stderr": num(s.get("trace_stderr")),
                     "share": num(s.get("gradient_share"))})
    return rows


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per normalisation with two or more runs: the median of each number over its runs
    (finite values only; None when it has none)."""
    out = []
    for norm in dict.fromkeys(r["norm"] for r in rows):
        mine = [r for r in rows if r["norm"] == norm]
        if len(mine) < 2:
            continue
        out.append({"run": f"{norm_label(norm)}: median of {len(mine)} runs", "norm": norm,
                    **{k: _median([r[k] for r in mine]) for k in ("l1", "trace", "share")}})
    return out


def _median(values: list[float | None]) -> float | None:
    have = [v for v in values if finite(v)]
    return statistics.median(have) if have else None


def _g(v: float | None, fmt: str = ".4g") -> str:
    return "—" if v is None else (format(v, fmt) if finite(v) else str(v))


def spectrum_table(items: Sequence[tuple[RunView, dict[str, Any]]], step: int | None
                   ) -> html.Table | None:
    """The table, or None when no run has a spectrum at that step yet."""
    rows = spectrum_rows(items, step)
    if not rows:
        return None
    body = [html.Tr([html.Td(r["run"]), html.Td(_g(r["step"], ",d")), html.Td(_g(r["l1"])),
                     html.Td(", ".join(_g(v, ".3g") for v in r["top"][1:]) or "—"),
                     html.Td(f"{_g(r['trace'])} ± {_g(r['stderr'], '.2g')}"),
                     html.Td(_g(r["share"], ".3f"))]) for r in rows]
    body += [html.Tr([html.Td(html.Em(m["run"])), html.Td(""), html.Td(_g(m["l1"])),
                      html.Td(""), html.Td(_g(m["trace"])), html.Td(_g(m["share"], ".3f"))],
                     className="median-row") for m in medians(rows)]
    return html.Table([html.Thead(html.Tr([html.Th(c) for c in COLUMNS])), html.Tbody(body)],
                      className="cost-table spectrum-table")
