"""scripts/reproduce_figures.py `render`: verdicts and figures from a results directory.

The results directory is read back (scripts/_repro_read.py), every figure judged with
server/reproduction/, and the figures drawn with the dashboard's own figure builders
(webapp/figures), screenshotted in headless chromium, one PNG per paper figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from scripts._repro_read import load_run
from server import reproduction as R

# Figures whose quantities span decades are drawn on log axes, as the paper draws them.
LOG = {"DLN": frozenset({"training", "landscape", "gradpred", "beta", "ics", "etas"}),
       "VGG": frozenset({"ics"}), "MLP": frozenset()}
CAPTIONS = {
    "training": "training (solid) and test (dotted) loss and accuracy",
    "landscape": "loss landscape: the band of l(η) = L(w − ηg) over η ∈ S, at each probed step",
    "gradpred": "gradient predictiveness: the band of ‖∇L(w − ηg) − g‖ over η ∈ S",
    "beta": "effective β-smoothness: max over η ∈ S of ‖∇L(w − ηg) − g‖ / (η‖g‖)",
    "etas": "d(η) = ‖∇L(w − ηg) − g‖ against η, one line per probed step (colour: step)",
    "ics": "internal covariate shift: ‖G − G′‖ and cos(G, G′) (Definition 2.1)",
    "dist_heat": "activation distribution over training",
    "dist_overlay": "activation quantiles (5-95 %, 25-75 %, median) over training",
    "sharpness": "sharpness: the training loss's top Hessian eigenvalue (Lanczos), with 2/LR",
    "dynamics": "gradient norm and distance from the initial weights",
}
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


def load_hists(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "distributions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_json(run_id: int, run: R.RunData) -> dict[str, Any]:
    """A run as the API lists it: what webapp.runsets.build_views reads."""
    diverged = None
    if run.status == "diverged":
        diverged = run.series["train/loss"][0][-1]
    return {"id": run_id, "name": run.name, "spec": run.spec, "status": run.status,
            "total": run.spec["steps"], "diverged_at": diverged}


def frame_for(runs: dict[int, R.RunData], hists: dict[int, list[dict[str, Any]]],
              layer: int, scope: str):
    from webapp.client import EtaRecord, Histogram, Series
    from webapp.figures import Frame

    metrics = {i: {k: Series(k, list(st), list(v)) for k, (st, v) in r.series.items()}
               for i, r in runs.items()}
    etas = {i: [EtaRecord(e.step, e.multiplier, e.eta, e.loss, e.grad_dist) for e in r.etas]
            for i, r in runs.items()}
    hs = {i: [Histogram(layer=h["layer"], scope=h["scope"], step=h["step"], lo=h["lo"],
                        hi=h["hi"], counts=h["counts"], underflow=h["underflow"],
                        overflow=h["overflow"], nonfinite=h["nonfinite"],
                        quantiles={k: float(v) for k, v in h.get("quantiles", {}).items()},
                        mean=float(h["mean"]), var=float(h["var"]))
              for h in hists.get(i, []) if h["layer"] == layer and h["scope"] == scope]
          for i in runs}
    return Frame(metrics=metrics, etas=etas, hists=hs)


def moments_figure(runs: dict[int, R.RunData], layers: tuple[int, ...]):
    """Fig 8: |mu_(t+1) - mu_t| and |var_(t+1) - var_t| of each layer's sampled unit between
    probed steps (the dashboard has no figure for this yet)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from webapp.style import base_layout, norm_color, norm_label

    fig = make_subplots(rows=len(layers), cols=2, shared_xaxes=True,
                        subplot_titles=[f"layer {k}: {t}" for k in layers
                                        for t in ("|Δ mean| of the sampled unit",
                                                  "|Δ variance| of the sampled unit")])
    for row, k in enumerate(layers, start=1):
        for col, m in enumerate(("mean", "var"), start=1):
            for run in runs.values():
                steps, values = run.series[f"act/L{k}/unit_{m}"]
                fig.add_trace(go.Scatter(
                    x=steps[1:], y=R.step_changes(values), mode="lines",
                    name=norm_label(run.spec["norm"]), legendgroup=run.spec["norm"],
                    showlegend=row == 1 and col == 1,
                    line={"color": norm_color(run.spec["norm"]), "width": 1.4}), row, col)
            fig.update_yaxes(type="log", row=row, col=col)
    fig.update_layout(**base_layout(260 * len(layers)))
    fig.update_xaxes(title_text="training step", row=len(layers))
    return fig


def figures_of(fig: R.Figure, runs: dict[int, R.RunData],
               hists: dict[int, list[dict[str, Any]]]) -> list[tuple[str, Any]]:
    """(caption, plotly Figure) for every panel of one paper figure, drawn by the dashboard's
    own figure builders."""
    from webapp import figures as W
    from webapp.runsets import build_views

    views = build_views([run_json(i, r) for i, r in runs.items()])
    out = []
    for name in fig.plots:
        layers = fig.layers if name.startswith("dist_") else (1,)
        for layer in layers:
            scope = "unit" if name == "dist_heat" else "layer"
            # A model the paper draws on linear axes throughout needs no entry.
            opts = W.Options(log=LOG.get(fig.model, frozenset()), layer=layer, scope=scope,
                             arrange="side")
            caption = CAPTIONS[name]
            if name.startswith("dist_"):
                what = "sampled unit" if scope == "unit" else "whole layer"
                caption += f", layer {layer} ({what})"
            out.append((caption, W.build(name, views, frame_for(runs, hists, layer, scope),
                                         opts)))
    if fig.id == "8":
        out.append(("change of the sampled unit's mean and variance between probed steps",
                    moments_figure(runs, fig.layers)))
    return out


def page_html(title: str, panels: list[tuple[str, Any]]) -> str:
    import plotly.io as pio

    parts = [f"<h2>{title}</h2>"]
    for i, (caption, figure) in enumerate(panels):
        figure.update_layout(width=1100)
        parts.append(f"<h4>{caption}</h4>")
        parts.append(pio.to_html(figure, full_html=False, include_plotlyjs=i == 0,
                                 config={"staticPlot": True}))
    return ("<html><head><meta charset='utf-8'><style>body{font-family:sans-serif;"
            "margin:12px;width:1110px} h2{font-size:18px;margin:4px 0} h4{font-size:13px;"
            # each panel has its caption above; the figure's own title is for exports
            "margin:10px 0 0;color:#555} .gtitle{display:none}</style></head><body>" +
            "".join(parts) + "</body></html>")


def screenshot(pages: list[tuple[Path, str]], chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1140, "height": 100})
            for png, html in pages:
                html_path = Path(tmp) / png.with_suffix(".html").name
                html_path.write_text(html)
                page.goto(html_path.as_uri())
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.js-plotly-plot')].every("
                    "d => d.querySelector('.main-svg'))", timeout=60_000)
                page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()


def png_name(fig: R.Figure) -> str:
    """The PNG `render --png` draws a figure into (docs/reproduction.md links it by this)."""
    stem = f"fig{fig.id}" if "-" in fig.id else f"fig{fig.id}-{fig.model.lower()}"
    return f"{stem}.png"


def render(args: argparse.Namespace) -> int:
    results_by_exp: dict[str, list[R.RunData]] = {}
    dirs: dict[str, list[Path]] = {}
    for exp in R.experiments_for(args.scale):
        d = args.results / exp.key
        dirs[exp.key] = sorted(p for p in d.iterdir() if (p / "run.json").exists()) \
            if d.is_dir() else []
        results_by_exp[exp.key] = [load_run(p) for p in dirs[exp.key]]
    results = R.evaluate_all(args.scale, results_by_exp)
    print(R.report_text(results, args.scale))
    if args.table:
        args.table.write_text(R.report_markdown(results, args.scale))
    if args.png is None:
        return 0
    args.png.mkdir(parents=True, exist_ok=True)
    pages = []
    for res in results:
        fig = res.figure
        if args.figures and fig.id not in args.figures.split(","):
            continue
        chosen = R.select_runs(fig, results_by_exp[fig.experiment])
        if not chosen:
            continue
        ids = {id(r): i for i, r in enumerate(results_by_exp[fig.experiment], start=1)}
        runs = {ids[id(r)]: r for r in chosen}
        hists = {}
        if any(p.startswith("dist_") for p in fig.plots):
            paths = dirs[fig.experiment]
            hists = {ids[id(r)]: load_hists(paths[ids[id(r)] - 1]) for r in chosen}
        title = (f"Fig {fig.id} ({fig.model}): {fig.title}. "
                 f"{R.EXPERIMENTS[fig.experiment].data[args.scale]}")
        pages.append((args.png / png_name(fig),
                      page_html(title, figures_of(fig, runs, hists))))
    screenshot(pages, args.chromium)
    for png, _ in pages:
        print(f"wrote {png}", file=sys.stderr)
    return 0


