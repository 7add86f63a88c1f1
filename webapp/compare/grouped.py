"""The compare view by seed group: one line per group (the median or mean over its seeds) with
a band (min-max or ± one standard deviation) in every scalar figure, and for the probe bands
the group's median band inside a lighter envelope (webapp/figures/groups.py draws them).

The cross-seed statistics come from the server, one request (one SQL statement) per figure
(ApiClient.grouped_metrics); a figure's layout is the single-run figure's, laid out for one
representative run per group, so grids, log toggles and titles behave as in the single view.
The traces take figures/groups.py's keyword extras beyond contract B (axes, dash, and the
words of the hover: centre, band, x axis).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from webapp.client import ApiClient, Group, GroupSeries
from webapp.compare.data import CACHE
from webapp.compare.transform import X_TITLES, XAxis
from webapp.figures import FIGURES, Options
from webapp.figures.axes import axis_ref, cell_axes
from webapp.figures.common import compact
from webapp.figures.groups import band_traces, group_traces
from webapp.figures.ics import ROWS as ICS_ROWS
from webapp.figures.ics import layers_of
from webapp.figures.landscape import BANDS, BETA
from webapp.figures.sharpness import DYNAMICS, TOP_EIG
from webapp.figures.training import PANELS
from webapp.runsets import RunView, build_views, grid_of
from webapp.style import FINISHED, group_label, title_standoffs

# The figures drawn by group, and the keys each one asks the server for (one request each).
KEYS: dict[str, str] = {
    "training": "train/*,test/*",
    "landscape": ",".join(BANDS["landscape"][:2]),
    "gradpred": ",".join(BANDS["gradpred"][:2]),
    "beta": BETA,
    "ics": "ics/*",
    "sharpness": TOP_EIG,
    "dynamics": ",".join(k for k, _ in DYNAMICS),
}
GROUPED_FIGURES = tuple(KEYS)
BAND_LABELS = {"minmax": "min–max", "std": "± 1 std"}


@dataclass
class Panel:
    """One thing a figure draws per group: a key's line, or a band between two keys."""

    axes: dict[str, str]
    key: str
    hi_key: str | None = None  # a band: key is its min, hi_key its max
    dash: str | None = None
    legend: bool = False


@dataclass
class GroupView:
    group: Group
    view: RunView  # how the group is drawn: its first run's colour, cell and probes
    run: dict[str, Any]  # that run's JSON (its x axis)


def group_views(groups: list[Group], runs: list[dict[str, Any]]) -> list[GroupView]:
    """A representative run per group (its first), laid out as the single view lays out
    runs, with the seed left out so it sets no group apart."""
    by_id = {r["id"]: r for r in runs}
    reps = []
    for g in groups:
        rid = next((i for i in g.run_ids if i in by_id), None)
        if rid is not None:
            run = copy.deepcopy(by_id[rid])
            run.get("spec", {}).pop("seed", None)
            reps.append((g, run))
    built = build_views([r for _g, r in reps])
    views = {v.id: v for v in built}
    out = [GroupView(g, views[r["id"]], by_id[r["id"]]) for g, r in reps]
    order = {v.id: i for i, v in enumerate(built)}
    return sorted(out, key=lambda gv: order[gv.view.id])


def drawn_views(views: list[RunView], gviews: list[GroupView], grouped: bool,
                single: bool) -> list[RunView]:
    """The runs a page's per-run figures draw, and so the runs whose records its build
    fetches: every run, or, on a page drawn by seed group without its single runs, each
    group's first run (seed_views). update.full_build draws these and prefetch.prefetch
    fetches them ahead of it: one rule for both."""
    return seed_views(gviews) if grouped and not single else views


def seed_views(gviews: list[GroupView]) -> list[RunView]:
    """The runs a page drawn by group shows in its per-run figures (Fig 11, the activation
    distributions) unless the single runs are asked for: each group's first run, in the
    group's cell and colour, titled with its seed and the group's size.

    One run per group rather than every seed: those figures have a panel (Fig 11: eight
    line bins and a marker trace; the heatmap: a heatmap) per run they draw, and with every
    seed they were half of the grouped page's drawing time in chromium
    (bench/bench_dashboard.py). The single-runs toggle draws every seed in them again."""
    out = []
    for gv in gviews:
        seed = gv.run.get("spec", {}).get("seed")
        n = len(gv.group.run_ids)
        which = ", ".join(p for p in (f"seed {seed}" if seed is not None else "",
                                      f"1 of {n} runs" if n > 1 else "") if p)
        out.append(replace(gv.view, label=f"{gv.view.label} ({which})" if which
                           else gv.view.label))
    return out


def panels(name: str, views: list[RunView], opts: Options, view: RunView) -> list[Panel]:
    xy = {"xaxis": "x", "yaxis": "y"}
    if name == "training":
        out = []
        shown = PANELS if any(v.classify for v in views) else PANELS[:1]
        for i, (title, train, test) in enumerate(shown):
            if title == "accuracy" and not view.classify:
                continue
            x, y = axis_ref(i + 1)
            axes = {"xaxis": x, "yaxis": y}
            out += [Panel(axes, train, legend=i == 0), Panel(axes, test, dash="dot")]
        return out
    if name in BANDS:
        side = opts.arrange == "side" and len(views) > 1
        axes = cell_axes(grid_of(views), view.row, view.col) if side else xy
        lo, hi, _ = BANDS[name]
        return [Panel(axes, lo, hi, legend=True)]
    if name == "beta":
        return [Panel(xy, BETA, legend=True)]
    if name == "sharpness":
        return [Panel(xy, TOP_EIG, legend=True)]
    if name == "dynamics":
        return [Panel(dict(zip(("xaxis", "yaxis"), axis_ref(i + 1), strict=True)), key,
                      legend=i == 0) for i, (key, _t) in enumerate(DYNAMICS)]
    if name == "ics":
        layers = layers_of(views) or [1]
        out = []
        for r, (stat, _t) in enumerate(ICS_ROWS):
            for c, layer in enumerate(layers):
                if layer not in view.ics_layers:
                    continue
                x, y = axis_ref(r * len(layers) + c + 1)
                out.append(Panel({"xaxis": x, "yaxis": y}, f"ics/L{layer}/{stat}",
                                 legend=r == 0 and c == 0))
        return out
    raise KeyError(name)


def finished_ids(runs: list[dict[str, Any]]) -> frozenset[int]:
    """The runs that have finished (as `fetch` takes them)."""
    return frozenset(r["id"] for r in runs if r["status"] in FINISHED)


def all_finished(groups: list[Group], finished: frozenset[int]) -> bool:
    """Whether every run of every group is in `finished`: their statistics can never change."""
    return all(i in finished for g in groups for i in g.run_ids)


def fetch(client: ApiClient, groups: list[Group], names: list[str], *, center: str,
          band: str, step_range: tuple[int, int] | None, finished: frozenset[int] = frozenset()
          ) -> dict[str, list[dict[str, GroupSeries]]]:
    """Each figure's grouped series, one request per figure, the requests in parallel.

    When every run of every group is in `finished` (read before this fetch began), the
    statistics can never change: they go to the finished-run cache (data.CACHE), where a page
    opened again, or the page's prefetch (prefetch.py), finds them. That request is the
    larger part of building a grouped page on a warm server. Values are kept to 7
    significant digits, as every figure draws them (figures/common.py: compact)."""
    lo, hi = step_range if step_range else (None, None)
    ids = [g.run_ids for g in groups]
    done = all_finished(groups, finished)
    key = (client.base_url, "groups", tuple(tuple(g) for g in ids), center, band, lo, hi)

    def one(name: str) -> list[dict[str, GroupSeries]]:
        def get() -> list[dict[str, GroupSeries]]:
            got = client.grouped_metrics(ids, KEYS[name], center=center, band=band,
                                         since_step=lo, until_step=hi)
            return [{k: _compact(s) for k, s in g.items()} for g in got]
        return CACHE.get_or_fetch((*key, KEYS[name]), done, get)

    got = client.map(one, names)
    return dict(zip(names, got, strict=True))


def _compact(s: GroupSeries) -> GroupSeries:
    return GroupSeries(s.key, s.steps, compact(s.center), compact(s.lo), compact(s.hi), s.n,
                       s.nonfinite)


def build(name: str, gviews: list[GroupView], data: list[dict[str, GroupSeries]],
          opts: Options, x: XAxis, *, smooth: float = 0.0, center: str = "median",
          band: str = "minmax") -> dict[str, Any]:
    """The figure `name` by group: the single view's layout for the representative runs,
    a line and band per group and panel."""
    views = [gv.view for gv in gviews]
    layout = copy.deepcopy(FIGURES[name](views, opts).layout)
    traces: list[dict[str, Any]] = []
    for gv, series in zip(gviews, data, strict=True):
        f = x.of(gv.view.id)
        label = group_label(gv.group.label) if gv.group.label else gv.view.label
        name_ = f"{label} (n={len(gv.group.run_ids)})"
        for p in panels(name, views, opts, gv.view):
            s = series.get(p.key)
            if s is None or not s.steps:
                continue
            common = {"x": f(list(s.steps)) if f else list(s.steps), "name": name_,
                      "color": gv.view.color, "legendgroup": f"group-{gv.group.key}",
                      "showlegend": p.legend, "axes": p.axes,
                      "center_label": center, "xlabel": X_TITLES[x.axis]}
            if p.hi_key:
                hi = series.get(p.hi_key)
                if hi is None:
                    continue
                traces += band_traces(s, hi, **common)
            else:
                test = p.dash is not None
                traces += group_traces(
                    s, **{**common, "name": f"{name_} (test)" if test else name_},
                    smooth=smooth, dash=p.dash or gv.view.dash,
                    band_label=BAND_LABELS.get(band, band))
    return {"data": traces, "layout": title_standoffs(layout)}
