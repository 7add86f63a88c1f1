"""The paper reproduction outside the service: train the catalogue in-process, then render
docs/reproduction/*.png and the verdict table from the results directory.

    scripts/reproduce_figures.py run --scale cpu --out results/       # trains (long)
    scripts/reproduce_figures.py render results/ --png docs/reproduction --table table.md

`run` writes what `landscope train --out` writes, one directory per catalogue experiment:
RESULTS/<experiment key>/<run label>/{run.json, scalars.csv, landscape.csv,
distributions.jsonl, analyses.json}. A spec that two experiments share (with the same
analyses) is trained once and copied (the engine is deterministic: same spec, same numbers).

`render` reads that directory back, decides every figure's verdict with
server/reproduction/ (the same checks `landscope reproduce --report` applies to results in the
database) and draws the figures with the dashboard's own figure builders (webapp/figures),
screenshotted in headless chromium.

Analyses: a plan that names analyses (Plan.analyses non-empty) has each run trained with
snapshots in a temporary folder, then analysed in the same process once it succeeds (the
engine code a worker runs), into analyses.json (scripts/_reproduce_analyses.py); `load_run`
reads them into RunData.analyses. A plan left at None (the server would run the preset's
default analyses, the dashboard's surfaces and spectra) runs none here: claims read only what
their plans name (R.needs_analyses), and these are minutes of CPU no verdict uses.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import _reproduce_analyses as A  # noqa: E402
from server import reproduction as R  # noqa: E402
from server.spec import RunSpec, parse_value  # noqa: E402

# -- run --------------------------------------------------------------------------------------


def planned(scale: str, only: set[str] | None, sets: dict[str, Any] | None = None
            ) -> list[tuple[str, str, RunSpec, str]]:
    """(experiment key, run label, spec, analyses JSON) for every run of the scale: the
    analyses are the plan's own, steps resolved against the run ("[]" for a plan without:
    see the module doc); a step the run does not snapshot stops here, before any training."""
    out = []
    for exp in R.experiments_for(scale):  # type: ignore[arg-type]
        if only and exp.key not in only:
            continue
        plan = exp.plans[scale]
        specs = plan.specs(**{"device": "cpu", **(sets or {})})
        labels = [s.name_hint() for s in specs]
        if len(set(labels)) != len(labels):
            raise SystemExit(f"{exp.key}: two runs share the label; extend name_hint")
        for label, spec in zip(labels, specs, strict=True):
            analyses = A.resolved(spec, plan.analyses or ())
            out.append((exp.key, label, spec,
                        json.dumps([a.model_dump(mode="json") for a in analyses])))
    return out


def train_one(spec_json: str, run_dir: str, data_dir: str, threads: int | None,
              analyses_json: str = "[]") -> dict[str, Any]:
    """One run with a FileSink, in a worker process (what `landscope train` does), then its
    analyses (AnalysisSpec JSON, steps resolved) on the snapshots it saved, once it succeeded.
    Threads: the spec's, else `threads` (--threads), else LANDSCOPE_TORCH_THREADS (default 1),
    the policy of every launch path (worker/engine/threads.py); run.json records what was
    used."""
    from server.analysis_spec import AnalysisSpec
    from server.settings import get_settings
    from worker.engine.file_sink import FileSink
    from worker.engine.snapshots import DirectorySnapshotStore
    from worker.engine.threads import resolve_threads
    from worker.engine.trainer import Trainer

    spec = RunSpec.model_validate_json(spec_json)
    analyses = [AnalysisSpec.model_validate(a) for a in json.loads(analyses_json)]
    run_path = Path(run_dir)
    (run_path / A.FILE).unlink(missing_ok=True)  # a retrained run's old results go
    sink = FileSink(run_path)
    started = time.perf_counter()
    fallback = threads if threads is not None else get_settings().torch_threads
    with tempfile.TemporaryDirectory(prefix="repro-snapshots-") as tmp:
        # Snapshots only when something reads them: the run's metrics are the same either way.
        store = DirectorySnapshotStore(Path(tmp)) if analyses else None
        try:
            result = Trainer(spec, Path(data_dir), "cpu", fallback).run(sink, snapshots=store)
        finally:
            sink.close()
        record = {"spec": spec.model_dump(mode="json"), "status": result.status,
                  "next_step": result.next_step, "diverged_at": result.diverged_at,
                  "info": result.info, "seconds": round(time.perf_counter() - started, 1)}
        if analyses and result.status == "succeeded":  # the server analyses succeeded runs
            began = time.perf_counter()
            done = A.run_analyses(spec, analyses, store, Path(data_dir),
                                  resolve_threads(spec.threads, fallback))
            A.write(run_path, done)
            record["analyses"] = {"seconds": round(time.perf_counter() - began, 1),
                                  "status": [d["status"] for d in done]}
    (run_path / "run.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def run(args: argparse.Namespace) -> int:
    only = set(args.only.split(",")) if args.only else None
    sets = {}
    for item in args.sets:
        key, _, value = item.partition("=")
        sets[key] = parse_value(value)
    plan = planned(args.scale, only, sets)
    first: dict[str, Path] = {}  # spec and analyses JSON -> the directory that trains it
    copies: dict[str, list[Path]] = {}
    jobs: dict[str, tuple[str, str]] = {}  # that key -> (spec JSON, analyses JSON)
    for key, label, spec, analyses in plan:
        d = args.out / key / label
        js = json.dumps([spec.model_dump_json(), analyses])
        jobs[js] = (spec.model_dump_json(), analyses)
        if not args.force and A.up_to_date(d, analyses):
            continue
        if js in first:
            copies.setdefault(js, []).append(d)
        else:
            first[js] = d
    # Longest first, so the two workers finish together.
    order = sorted(first, key=lambda js: -_cost(RunSpec.model_validate_json(jobs[js][0])))
    print(f"{len(plan)} runs of scale {args.scale}: {len(order)} to train, "
          f"{sum(map(len, copies.values()))} copies", file=sys.stderr)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(train_one, jobs[js][0], str(first[js]), str(args.data_dir),
                               args.threads, jobs[js][1]): js for js in order}
        for fut in as_completed(futures):
            js = futures[fut]
            rec = fut.result()
            print(f"{first[js].relative_to(args.out)}: {rec['status']} in {rec['seconds']} s",
                  file=sys.stderr, flush=True)
            for d in copies.get(js, []):
                shutil.rmtree(d, ignore_errors=True)
                shutil.copytree(first[js], d)
    return 0


def _cost(spec: RunSpec) -> float:
    per_step = 30.0 if spec.model == "vgg" else 1.0
    if spec.norm != "none":
        per_step *= 1.5
    return spec.steps * per_step * spec.probe_cost()["floor"]


# -- read back --------------------------------------------------------------------------------


def _num(text: str) -> float:
    return float(text)  # "nan", "inf", "-inf" parse


def load_run(run_dir: Path) -> R.RunData:
    rec = json.loads((run_dir / "run.json").read_text())
    series: dict[str, tuple[list[int], list[float]]] = {}
    with (run_dir / "scalars.csv").open() as fh:
        for row in csv.DictReader(fh):
            steps, values = series.setdefault(row["key"], ([], []))
            steps.append(int(row["step"]))
            values.append(_num(row["value"]))
    etas = []
    with (run_dir / "landscape.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["probe"] == "landscape":
                etas.append(R.EtaPoint(int(row["step"]), _num(row["multiplier"]),
                                       _num(row["eta"]), _num(row["loss"]),
                                       _num(row["grad_dist"])))
    for steps, values in series.values():  # files are in step order; keep it so
        order = sorted(range(len(steps)), key=steps.__getitem__)
        steps[:], values[:] = [steps[i] for i in order], [values[i] for i in order]
    return R.RunData(rec["spec"], series, rec["status"], etas, run_dir.name,
                     A.load_analyses(run_dir))


def load_experiment(results: Path, key: str) -> list[R.RunData]:
    d = results / key
    if not d.is_dir():
        return []
    return [load_run(p) for p in sorted(d.iterdir()) if (p / "run.json").exists()]


# -- render -----------------------------------------------------------------------------------

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
            "margin:10px 0 0;color:#555}</style></head><body>" + "".join(parts) +
            "</body></html>")


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train the catalogue's runs in-process")
    r.add_argument("--scale", choices=R.SCALES, default="cpu")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--only", help="comma-separated experiment keys")
    r.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    r.add_argument("--threads", type=int, default=None,
                   help="torch threads of a run whose spec sets none (default: "
                        "LANDSCOPE_TORCH_THREADS, else 1; 0 = every core)")
    r.add_argument("--data-dir", type=Path, default=Path.home() / ".landscope")
    r.add_argument("--force", action="store_true",
                   help="retrain runs that have a run.json (and their planned analyses)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key in every run (a smoke test: steps=100)")
    r.set_defaults(fn=run)
    g = sub.add_parser("render", help="verdicts and figures from a results directory")
    g.add_argument("results", type=Path)
    g.add_argument("--scale", choices=R.SCALES, default="cpu")
    g.add_argument("--png", type=Path, help="write one PNG per paper figure here")
    g.add_argument("--table", type=Path, help="write the verdict table as Markdown")
    g.add_argument("--figures", help="comma-separated figure ids (default: all)")
    g.add_argument("--chromium", default="/usr/bin/chromium")
    g.set_defaults(fn=render)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    import _mkl_pin

    _mkl_pin.pin()  # oneMKL's COMPATIBLE branch: the same bits on Intel and AMD
    raise SystemExit(main())
