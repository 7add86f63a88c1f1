"""What the Reproduction page reads from the API: the newest `repro: ...` experiment per
catalogue entry and scale (server/reproduction/ names them), each run's raw series for the
checks, and the downsampled series, probe records and histograms its plots draw.

Seeds. A reproduction runs every configuration in several seeds; drawn by seed group (the
default), each figure's runs are grouped by the server (GET /groups: runs that differ only in
their seed) and its scalar plots read the groups' median and min-max band per bucket (GET
/groups/metrics), the Compare page's own requests and math (webapp/compare/grouped.py).

Only HTTP, through the ApiClient: the page sees what `landscope reproduce --report` sees,
the succeeded analyses of an experiment whose plan names them included (R.needs_analyses).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from server import reproduction as R
from webapp.client import ApiClient, EtaRecord, Histogram, Series
from webapp.compare import grouped as gp
from webapp.compare.data import Fetched, FinishedCache, fetch_full, fetch_hists
from webapp.style import FINISHED

SEED_VIEWS = ("groups", "runs")  # the page's seed switch: by seed group, or every seed's run

PAGE = 500  # the API's largest page of experiments
# Raw series of finished runs never change; the checks read every point of every key, so
# a poll while other runs train must not fetch them again. Its own cache: the compare
# view's is sized for one page's runs, and the reproduction has about two dozen.
CACHE = FinishedCache(size=128)


@dataclass(frozen=True)
class Plot:
    """One plot of a figure: a webapp.figures name and, for activations, the layer shown."""

    name: str
    layer: int = 1
    scope: str = "layer"


def latest(experiments: Iterable[dict[str, Any]]) -> dict[R.Scale, dict[str, dict[str, Any]]]:
    """{scale: {catalogue key: the newest experiment (list JSON) of that name}}; experiments
    that are not the reproduction's are ignored. Newest is the highest id (ids only grow),
    so a re-run replaces the figure's data and an older one stays in the runs list."""
    out: dict[R.Scale, dict[str, dict[str, Any]]] = {}
    for exp in experiments:
        parsed = R.parse_name(exp.get("name", ""))
        if parsed is None:
            continue
        catalogue, scale = parsed
        have = out.setdefault(scale, {}).get(catalogue.key)
        if have is None or exp["id"] > have["id"]:
            out[scale][catalogue.key] = exp
    return {s: out[s] for s in R.SCALES if s in out}


def default_scale(by_scale: dict[R.Scale, dict[str, dict[str, Any]]]) -> R.Scale | None:
    """The scale of the newest reproduction experiment: what the user ran last."""
    newest = [(max(e["id"] for e in exps.values()), s) for s, exps in by_scale.items() if exps]
    return max(newest)[1] if newest else None


def plots_of(figure: R.Figure) -> list[Plot]:
    """The figure's plots; an activation figure gets one per layer the paper shows (the
    overlay of Fig 8 follows the sampled unit, whose moments its claims measure)."""
    out = []
    for name in figure.plots:
        if name.startswith("dist_"):
            scope = "unit" if name == "dist_overlay" else "layer"
            out += [Plot(name, layer, scope) for layer in figure.layers or (1,)]
        else:
            out.append(Plot(name))
    return out


def all_experiments(client: ApiClient) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = client.experiments(limit=PAGE, offset=len(out))
        out += page
        if len(page) < PAGE:
            return out


@dataclass
class RunFetch:
    """One run: the checks' view of it and what its plots draw."""

    data: R.RunData
    plot: Fetched | None  # None while queued: nothing is written yet
    hists: dict[tuple[int, str], list[Histogram]] = field(default_factory=dict)


@dataclass
class Grouped:
    """A figure's runs by seed group: each group's view (colour, cell, label) and, per plot
    drawn by group, each group's series (median and min-max band per bucket), in that order."""

    views: list[gp.GroupView]
    series: dict[str, list[dict[str, Any]]]  # plot name -> [GroupSeries by key, per group]


@dataclass
class Loaded:
    """Everything the page shows for one scale."""

    scale: R.Scale
    experiments: dict[str, dict[str, Any]]  # catalogue key -> experiment detail (with runs)
    runs: dict[int, RunFetch]
    pending_analyses: int = 0  # queued or running analyses that checks of the scale read
    groups: dict[str, Grouped] = field(default_factory=dict)  # figure id -> its seed groups

    def run_json(self, key: str) -> list[dict[str, Any]]:
        return list(self.experiments.get(key, {}).get("runs", []))

    def run_data(self, key: str) -> list[R.RunData]:
        return [self.runs[r["id"]].data for r in self.run_json(key) if r["id"] in self.runs]

    @property
    def finished(self) -> bool:
        return not self.pending_analyses and all(
            r["status"] in FINISHED for e in self.experiments.values() for r in e.get("runs", []))


def run_data(run: dict[str, Any], metrics: dict[str, Series],
             etas: list[EtaRecord]) -> R.RunData:
    """The checks' RunData from the client's raw series (not downsampled: the checks take
    peaks and medians over every point)."""
    series = {}
    for key, s in metrics.items():
        if s.buckets:
            raise ValueError(f"{key} came downsampled")
        series[key] = ([int(t) for t in s.steps], list(s.values))
    points = [R.EtaPoint(e.step, e.multiplier, e.eta, e.loss, e.grad_dist) for e in etas]
    return R.RunData(dict(run["spec"]), series, run["status"], points, run.get("name", ""))


def fetch_checks(client: ApiClient, run: dict[str, Any], needs_etas: bool) -> R.RunData:
    """A run as the checks see it. Only a succeeded or diverged run is read: the checks
    treat any other as missing (its status says why), as `landscope reproduce` does."""
    if run["status"] not in ("succeeded", "diverged"):
        return R.RunData(dict(run["spec"]), {}, run["status"], name=run.get("name", ""))

    def fetch() -> tuple[dict[str, Series], list[EtaRecord]]:
        metrics = client.metrics(run["id"], R.METRIC_KEYS, max_points=1_000_000)
        return metrics, client.probes(run["id"]) if needs_etas else []

    metrics, etas = CACHE.get_or_fetch((client.base_url, run["id"], needs_etas), True, fetch)
    return run_data(run, metrics, etas)


def fetch_run(client: ApiClient, run: dict[str, Any], needs_etas: bool,
              layers: list[tuple[int, str]]) -> RunFetch:
    data = fetch_checks(client, run, needs_etas)
    if run["status"] == "queued":
        return RunFetch(data, None)
    finished = run["status"] in FINISHED
    plot = fetch_full(client, run, layer=1, scope="layer", step_range=None, hists=False)
    hists = {(layer, scope): fetch_hists(client, run["id"], layer, scope, None, None,
                                         finished=finished) for layer, scope in layers}
    return RunFetch(data, plot, hists)


def figure_runs(figure: R.Figure, loaded: Loaded) -> list[dict[str, Any]]:
    """The runs (API JSON) of the figure's experiment that the figure uses."""
    return [r for r in loaded.run_json(figure.experiment) if R.uses(figure, r["spec"])]


def grouped_plots(figure: R.Figure) -> list[str]:
    """The figure's plots that can be drawn by seed group (scalar series over steps)."""
    return [p.name for p in plots_of(figure) if p.name in gp.GROUPED_FIGURES]


def fetch_groups(client: ApiClient, figure: R.Figure, runs: list[dict[str, Any]]
                 ) -> Grouped | None:
    """The figure's seed groups and their series; None when its runs are of one seed (the
    runs themselves are drawn). A figure with several seeds but no plot that can be grouped
    gets no groups (its plots draw the lowest seed), and costs no request."""
    if len({r["spec"].get("seed") for r in runs}) < 2:
        return None
    names = grouped_plots(figure)
    if not names:
        return Grouped([], {})
    groups = client.groups(runs=[r["id"] for r in runs])
    if not any(len(g.run_ids) > 1 for g in groups):
        return None
    # Legends name a group as the single runs are named ("BatchNorm · lr 0.5"), not by the
    # server's terse label of what sets it apart ("batch"): the seed switch keeps the words.
    views = gp.group_views([replace(g, label="") for g in groups], runs)
    series = gp.fetch(client, [v.group for v in views], names, center="median",
                      band="minmax", step_range=None)
    return Grouped(views, series)


def load(client: ApiClient, scale: R.Scale,
         chosen: dict[str, dict[str, Any]], seeds: str = "groups") -> Loaded:
    """The experiments of `chosen` (key -> list JSON, from `latest`) in detail, and every run
    of them fetched (in parallel: one run's fetch should not wait for another's); with
    `seeds` "groups", each figure's seed groups too."""
    details = {key: client.experiment(exp["id"]) for key, exp in chosen.items()}
    jobs = []
    for key, detail in details.items():
        figures = [f for f in R.figures_for(scale) if f.experiment == key]
        for run in detail["runs"]:
            layers = sorted({(p.layer, p.scope) for f in figures if R.uses(f, run["spec"])
                             for p in plots_of(f) if p.name.startswith("dist_")})
            jobs.append((run, R.needs_etas(key), layers))
    fetched = client.map(lambda job: fetch_run(client, *job), jobs)
    runs = {run["id"]: f for (run, _, _), f in zip(jobs, fetched, strict=True)}
    pending = 0
    for key, detail in details.items():
        if not R.needs_analyses(key, scale):
            continue
        by_run, waiting = fetch_analyses(client, detail["id"])
        pending += waiting
        for run_id, analyses in by_run.items():
            if run_id in runs:
                runs[run_id].data.analyses = analyses
    loaded = Loaded(scale, details, runs, pending)
    if seeds == "groups":
        figures = [f for f in R.figures_for(scale) if f.experiment in details]
        got = client.map(lambda f: fetch_groups(client, f, figure_runs(f, loaded)), figures)
        loaded.groups = {f.id: g for f, g in zip(figures, got, strict=True) if g is not None}
    return loaded


def fetch_analyses(client: ApiClient, experiment_id: int
                   ) -> tuple[dict[int, list[R.AnalysisData]], int]:
    """The experiment's succeeded analyses by run, oldest first (RunData.analysis takes the
    newest), and how many are still queued or running. A succeeded analysis never changes:
    its detail is fetched once. A failed one is left out (its claims have no data)."""
    listed = client.analyses(experiment_id=experiment_id, limit=PAGE)
    done = sorted((a for a in listed if a["status"] == "succeeded"), key=lambda a: a["id"])
    got = client.map(lambda a: CACHE.get_or_fetch((client.base_url, "analysis", a["id"]), True,
                                                  lambda: client.analysis(a["id"])), done)
    by_run: dict[int, list[R.AnalysisData]] = {}
    for a, detail in zip(done, got, strict=True):
        by_run.setdefault(a["run_id"], []).append(R.analysis_data_from_api(detail))
    return by_run, sum(a["status"] in ("queued", "running") for a in listed)
