"""The Reproduction page's content as pure functions: fetched data (webapp/reproduction_data.py)
in, Dash components out. Per figure of the paper, in the catalogue's order: what was run on
which data, the paper's value and ours for every claim, the verdict, why it differs, the
protocol choices made where the paper is silent, and our plots, drawn by the compare view's
own figure builders from the same runs the checks read.

Seeds: by seed group (the default), each configuration's scalar plots are its seeds' median
with a min-max band (the Compare page's grouped figures, webapp/compare/grouped.py); the
plots that cannot be grouped (histograms, per-eta curves) show the lowest seed, and say so.
"each seed" draws every run; each figure also links to its runs on the Compare page.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dash import dcc, html

from server import reproduction as R
from webapp import figures
from webapp.compare import grouped as gp
from webapp.compare.layout import SECTIONS
from webapp.compare.transform import XAxis
from webapp.compare.update import paper_log
from webapp.environment_view import environments_line
from webapp.figures.common import Frame
from webapp.reproduction_data import Loaded, Plot, figure_runs, plots_of
from webapp.runsets import build_views
from webapp.style import FINISHED, VERDICT_COLORS, graph_config

VERDICTS: tuple[R.Verdict, ...] = ("reproduced", "partly", "not reproduced", "no data")
MARKS = {"holds": "claim-holds", "fails": "claim-fails", "mixed": "claim-mixed",
         "no data": "claim-nodata"}  # by claim status (a mixed claim holds in some seeds)
TITLES = {name: title for name, title, *_ in SECTIONS}
QUICK_COMMAND = "landscope reproduce --quick"


def verdict_badge(verdict: str) -> html.Span:
    return html.Span(verdict, className="badge verdict-badge",
                     style={"backgroundColor": VERDICT_COLORS.get(verdict, "#888")},
                     title=f"verdict: {verdict}")


def results(loaded: Loaded) -> list[R.FigureResult]:
    """Every figure of the scale, judged from the runs of its experiment (none: no data)."""
    return [R.evaluate(f, loaded.run_data(f.experiment)) for f in R.figures_for(loaded.scale)]


def command(scale: R.Scale, key: str | None = None) -> str:
    flag = "--quick" if scale == "quick" else f"--scale {scale}"
    return f"landscope reproduce {flag}" + (f" --only {key}" if key else "")


def reasons(result: R.FigureResult, experiment: dict[str, Any] | None,
            scale: R.Scale) -> list[str]:
    """Why the verdict is not "reproduced", one sentence per cause: the premise that fails,
    each claim that does not hold (with our numbers), each that cannot be decided yet."""
    if result.verdict == "reproduced":
        return []
    fig = result.figure
    if experiment is None:
        return [f"Not run at scale {scale} yet: `{command(scale, fig.experiment)}`."]
    out = []
    for claim, outcome in result.outcomes:
        if claim is fig.premise:
            if outcome.ok is False:
                out.append(f"The paper's setting does not hold here, so its comparison does "
                           f"not apply: {claim.text.removeprefix('premise: ')} fails "
                           f"({outcome.ours}).")
            continue
        if outcome.status == "mixed":
            out.append(f"Holds in only {outcome.k} of {outcome.n} seeds: {claim.text} "
                       f"(ours: {outcome.ours}).")
        elif outcome.ok is False:
            out.append(f"Does not hold: {claim.text} (ours: {outcome.ours}).")
        elif outcome.ok is None:
            out.append(f"Not decided yet: {outcome.ours.removeprefix('no data: ')}.")
    return out


def claims_table(result: R.FigureResult, ran: bool = True) -> html.Table:
    """A row per claim (the premise first): the claim and how we measure it, the paper's
    value, ours, and whether it holds. `ran`: the experiment exists at this scale (if not,
    "no run with {...}" for every claim would only repeat that)."""
    rows = []
    for claim, outcome in result.outcomes:
        mark, cls = R.mark(outcome), MARKS[outcome.status]
        ours = outcome.ours if ran else "not run"
        premise = claim is result.figure.premise
        rows.append(html.Tr([
            html.Td([html.Div(claim.text, className="claim-text"),
                     html.Div(claim.statistic, className="claim-stat")]),
            html.Td(claim.paper),
            html.Td(ours, title=per_seed(outcome) if ran else None),
            html.Td(html.Span(mark, className=f"claim-mark {cls}")),
        ], className="claim-premise" if premise else None))
    head = html.Thead(html.Tr([html.Th("claim (and our statistic)"), html.Th("paper"),
                               html.Th("ours"), html.Th("")]))
    return html.Table([head, html.Tbody(rows)], className="claims-table")


def per_seed(outcome: R.Outcome) -> str | None:
    """Each seed's own outcome, one line each (the cell's hover), when there are several."""
    if len(outcome.seeds) < 2:
        return None
    return "\n".join(f"seed {s}: {R.mark(o)} · {o.ours}" for s, o in outcome.seeds)


def runs_line(experiment: dict[str, Any] | None, runs: list[dict[str, Any]],
              prefix: str) -> Any:
    if experiment is None:
        return html.Span("not run at this scale", className="muted")
    counts = Counter(r["status"] for r in runs)
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return html.Span([
        dcc.Link(f"experiment {experiment['id']}", href=f"{prefix}experiments/{experiment['id']}"),
        f" · {experiment['name']} · {len(runs)} run{'s' * (len(runs) != 1)} used: {states}",
    ])


def lowest_seed(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of the lowest seed among them (every run when they have no seed)."""
    seeds = [r["spec"].get("seed") for r in runs if r["spec"].get("seed") is not None]
    return [r for r in runs if r["spec"].get("seed") == min(seeds)] if seeds else runs


def plot_figures(figure: R.Figure, loaded: Loaded
                 ) -> list[tuple[Plot, dict[str, Any], str]]:
    """Our plots of the figure from the runs it uses, as plain figure data, each with a note
    on the seeds it draws ("" when it draws every run). By seed group when the page loaded
    the figure's groups: a line and band per group where the plot can be grouped, the lowest
    seed's runs where it cannot."""
    runs = figure_runs(figure, loaded)
    fetched = {r["id"]: loaded.runs[r["id"]] for r in runs if r["id"] in loaded.runs}
    if not any(f.plot for f in fetched.values()):
        return []  # every run still queued: empty axes would say nothing
    grouped = loaded.groups.get(figure.id)
    # The paper draws the deep linear network's losses, bands and beta on log axes.
    log = frozenset(paper_log(runs))
    single = lowest_seed(runs) if grouped else runs
    views = build_views(single)
    drawn = {r["id"]: fetched[r["id"]] for r in single if r["id"] in fetched}
    final = all(r["status"] in FINISHED for r in runs)  # nothing will extend these figures
    out = []
    for plot in plots_of(figure):
        opts = figures.Options(log=log, layer=plot.layer, scope=plot.scope)
        if grouped and plot.name in grouped.series:
            n = max(len(v.group.run_ids) for v in grouped.views)
            out.append((plot, gp.build(plot.name, grouped.views, grouped.series[plot.name],
                                       opts, XAxis()),
                        f"median of {n} seeds, min–max band"))
            continue
        frame = Frame(
            metrics={rid: f.plot.metrics for rid, f in drawn.items() if f.plot},
            etas={rid: f.plot.etas for rid, f in drawn.items() if f.plot},
            hists={rid: f.hists.get((plot.layer, plot.scope), []) for rid, f in drawn.items()},
        )
        seed = single[0]["spec"].get("seed") if grouped and single else None
        n = len({r["spec"].get("seed") for r in runs})
        note = f"seed {seed} only (of {n}): not drawn by group" if grouped else ""
        out.append((plot, figures.build_dict(plot.name, views, frame, opts, final=final), note))
    return out


def plot_title(plot: Plot, note: str = "") -> str:
    title = TITLES.get(plot.name, plot.name)
    if plot.name.startswith("dist_"):
        where = "whole layer" if plot.scope == "layer" else "sampled unit"
        title += f" · layer {plot.layer}, {where}"
    return title + (f" · {note}" if note else "")


def seeds_link(runs: list[dict[str, Any]], prefix: str) -> Any:
    """The figure's runs on the Compare page, every seed its own line (group=0)."""
    if len({r["spec"].get("seed") for r in runs}) < 2:
        return None
    ids = ",".join(str(r["id"]) for r in sorted(runs, key=lambda r: r["id"]))
    return html.Span([" · ", dcc.Link("each seed on the Compare page",
                                      href=f"{prefix}compare?runs={ids}&group=0",
                                      className="repro-seeds-link")])


def figure_section(result: R.FigureResult, loaded: Loaded, prefix: str = "/") -> html.Section:
    fig = result.figure
    experiment = loaded.experiments.get(fig.experiment)
    runs = figure_runs(fig, loaded)
    catalogue = R.EXPERIMENTS[fig.experiment]
    why = reasons(result, experiment, loaded.scale)
    plots = [html.Div([html.Div(plot_title(p, note), className="repro-plot-title"),
                       dcc.Graph(figure=f, config=graph_config(f"fig{fig.id}-{p.name}"),
                                 className="graph")], className="repro-plot")
             for p, f, note in plot_figures(fig, loaded)]
    choices = list(fig.choices) or ["none beyond the statistics in the table"]
    return html.Section([
        html.Div([
            html.Div([html.H3(f"Fig {fig.id} · {fig.title}"),
                      html.Span(fig.model, className="paper-ref"),
                      html.Span("beyond the paper", className="paper-ref")
                      if fig.beyond_paper else None],
                     className="section-title"),
            verdict_badge(result.verdict),
        ], className="section-head"),
        html.P([html.Strong("Data and scale: "), catalogue.data[loaded.scale]],
               className="section-text"),
        html.P([runs_line(experiment, runs, prefix), seeds_link(runs, prefix)],
               className="section-text"),
        environments_line(runs),  # threads, precision, machine: what the numbers rest on
        html.Div([html.Strong("Why it differs"), html.Ul([html.Li(w) for w in why])],
                 className="repro-reason") if why else None,
        claims_table(result, ran=experiment is not None),
        html.Div([html.Strong("Protocol choices where the paper is silent"),
                  html.Ul([html.Li(c) for c in choices])], className="repro-choices"),
        html.Div(plots, className="repro-plots") if plots else html.P(
            "Our plots appear here once its runs start." if experiment else "",
            className="section-text"),
    ], className="card figure-card repro-figure", id=f"repro-fig-{fig.id}")


def summary(found: list[R.FigureResult], loaded: Loaded) -> html.Div:
    counts = Counter(r.verdict for r in found)
    runs = [r for e in loaded.experiments.values() for r in e.get("runs", [])]
    done = sum(r["status"] in FINISHED for r in runs)
    return html.Div([
        html.Span([verdict_badge(v), f" {counts[v]}"], className="repro-count")
        for v in VERDICTS if counts[v]
    ] + [
        html.Span(f"{len(found)} figures at scale {loaded.scale} · {done} of {len(runs)} runs "
                  "finished", className="muted"),
        html.Span("● live: verdicts update as runs finish" if done < len(runs)
                  else "all runs finished", className="live"),
    ], className="repro-summary card")


def content(loaded: Loaded, prefix: str = "/") -> tuple[list[Any], html.Div]:
    """(a section per figure, the summary line)."""
    found = results(loaded)
    return [figure_section(r, loaded, prefix) for r in found], summary(found, loaded)


def empty_state(n_experiments: int) -> html.Div:
    return html.Div([
        html.H3("Nothing reproduced yet"),
        html.P(["Submit the paper's experiments with ", html.Code(QUICK_COMMAND),
                " (a few minutes on a CPU; ", html.Code("landscope reproduce"),
                " runs the larger cpu scale). Their experiments are named ",
                html.Code(R.NAME_PREFIX + "..."), "; this page judges the newest of each as "
                "its runs finish."]),
        html.Button(f"Run the quick reproduction now ({n_experiments} experiments)",
                    id="repro-submit", className="btn btn-primary"),
        html.Span(" needs the API token in the header when the server sets one",
                  className="muted"),
    ], className="card repro-empty")
