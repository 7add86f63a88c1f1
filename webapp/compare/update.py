"""The compare view's one controller: what to do when the page opens, a control changes or the
poll ticks. One function per case, each returning the figures to send (a whole figure, a
Patch, or None for "unchanged") and the new state. The Dash callback is a thin adapter over
`update`, so tests call these directly.

- open, step range or arrangement changed: fetch everything, build every figure;
- layer or scope changed: fetch and build the activation figures only;
- log toggles: patch the y axis types, fetch nothing;
- poll: fetch what arrived since each run's cursor and extend the figures with Patches;
  rebuild instead when a run has just diverged (its marks go into the layout) or a live
  series outgrew its point budget. Polling stops once every run is finished and drawn.
  A view by seed group, smoothed or on another x axis than the step is rebuilt on each
  poll instead (transform.py: Patches would extend the wrong traces); a grouped rebuild
  is one request per figure (grouped.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import plotly.graph_objects as go
from dash import Patch

from webapp import figures, sdk_view
from webapp.client import ApiClient, ApiError, Group
from webapp.compare import grouped as gp
from webapp.compare.data import (
    CACHE,
    REBUILD_POINTS,
    Cursor,
    Fetched,
    Gone,
    fetch_full,
    fetch_hists,
    fetch_new,
    frame_of,
    load_runs,
    missing_note,
)
from webapp.compare.transform import (
    WALL_KEY,
    XAxis,
    apply_view,
    faint_singles,
    interp_wall,
    resolve_x,
)
from webapp.figures import FIGURES, HIST_FIGURES, Options
from webapp.figures.common import Frame
from webapp.runsets import RunView, build_views, max_total
from webapp.style import FINISHED

FULL = "full"
HISTS = "hists"
LOG = "log"
POLL = "poll"


@dataclass
class Controls:
    arrange: str = "side"
    log: tuple[str, ...] = tuple(sorted(figures.DEFAULT_LOG))
    step_from: int | None = None
    step_to: int | None = None
    layer: int | None = None
    scope: str = "layer"
    # The view (viewstate.py): seed groups (None: when any group has several runs), their
    # centre and band, single runs beneath, smoothing, x axis, log x and the zoomed x range.
    group: bool | None = None
    center: str = "median"
    band: str = "minmax"
    single: bool = False
    smooth: float = 0.0
    x: str = "step"
    logx: bool = False
    xrange: tuple[float, float] | None = None
    choose_log: bool = True  # the first build picks the paper's log axes (no logy in the URL)


@dataclass
class Result:
    figures: dict[str, dict | go.Figure | Patch | None]
    state: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)  # the runs' JSON, for the header
    title: str = ""
    notice: str = ""
    log: tuple[str, ...] | None = None  # the log toggles to show, when the page chose them
    grouped: bool | None = None  # whether the page drew groups, when the page chose it
    gone: str = ""  # nothing to compare, and why (data.Gone): the page says so, no figures

    @property
    def polling(self) -> bool:
        return not self.state.get("stopped", False)


def options(controls: Controls, views: list[RunView]) -> Options:
    total = max_total(views)
    rng = None
    if controls.step_from is not None or controls.step_to is not None:
        lo = max(0, controls.step_from or 0)
        hi = controls.step_to if controls.step_to is not None else total
        rng = (lo, max(lo, hi))
    n_layers = max((v.n_layers for v in views), default=0)
    layer = min(max(1, controls.layer or 1), max(1, n_layers))
    return Options(arrange=controls.arrange, log=frozenset(controls.log), step_range=rng,
                   layer=layer, scope=controls.scope)


def update(client: ApiClient, action: str, source: dict[str, Any], state: dict[str, Any] | None,
           controls: Controls) -> Result:
    if not state:  # the page opens: it picks the paper's log axes for what it shows
        return full_build(client, source, controls, choose_log=controls.choose_log)
    if not state.get("views") or action == FULL or state.get("derived"):
        # A derived view (grouped, smoothed, another x) has traces and axes of its own:
        # any change rebuilds it.
        return full_build(client, source, controls)
    if action == LOG:
        return relog(state, controls)
    if action == HISTS:
        return rebuild_hists(client, state, controls)
    return poll(client, state, controls)


def _views(state: dict[str, Any]) -> list[RunView]:
    return [RunView.from_dict(v) for v in state["views"]]


def _cursors(state: dict[str, Any]) -> dict[int, Cursor]:
    return {int(k): Cursor.from_dict(v) for k, v in state["cursors"].items()}


def _state(source, views, cursors: dict[int, Cursor], runs: list[dict[str, Any]]) -> dict:
    return {
        "source": source,
        "views": [v.to_dict() for v in views],
        "cursors": {str(k): c.to_dict() for k, c in cursors.items()},
        "diverged": {str(r["id"]): r.get("diverged_at") for r in runs},
        "stopped": all(c.done for c in cursors.values()),
    }


def paper_log(runs: list[dict[str, Any]]) -> tuple[str, ...]:
    """The y axes the paper draws logarithmic for these runs: the deep linear network's
    losses, bands and beta span orders of magnitude (Fig 5b, 10); ICS and Fig 11 always."""
    log = set(figures.DEFAULT_LOG)
    if any(r["spec"].get("model") == "dln" for r in runs):
        log |= {"training", "landscape", "gradpred", "beta"}
    return tuple(sorted(log))


def full_build(client: ApiClient, source: dict[str, Any], controls: Controls, *,
               choose_log: bool = False) -> Result:
    runs, title = load_runs(client, source)
    # SDK runs have no spec: the figures learn their probes from what they recorded.
    runs = client.map(lambda r: sdk_view.describe(client, r), runs)
    views = build_views(runs)
    if choose_log:
        controls = replace(controls, log=paper_log(runs))
    opts = options(controls, views)
    groups, grouped = decide_groups(client, source, runs, controls)
    gviews = gp.group_views(groups, runs) if grouped else []
    # Drawn by group without the single runs beneath, the scalar figures' lines come from the
    # server's group statistics: the runs' own scalars are neither fetched nor drawn, and the
    # per-run figures draw each group's first run (grouped.seed_views).
    singles = [n for n in FIGURES if controls.single or not grouped
               or n not in gp.GROUPED_FIGURES]
    drawn = gp.drawn_views(views, gviews, grouped, controls.single)
    by_id = {r["id"]: r for r in runs}
    fetched = dict(zip(
        [v.id for v in drawn],
        client.map(lambda v: fetch_full(client, by_id[v.id], layer=opts.layer,
                                        scope=opts.scope, step_range=opts.step_range,
                                        scalars=len(singles) == len(FIGURES)), drawn),
        strict=True,
    ))
    frame = frame_of(fetched)
    cursors = {rid: f.cursor for rid, f in fetched.items()}
    for r in runs:  # a run not drawn on its own: only whether it has finished matters
        cursors.setdefault(r["id"], Cursor(done=r["status"] in FINISHED))
    final = all(c.done for c in cursors.values())  # no patch will follow: drop empty traces
    figs = {name: figures.build_dict(name, drawn, frame, opts, final=final) for name in singles}
    x = resolve_x(controls.x, runs, _walls(client, runs) if controls.x == "wall" else None)
    for name in singles:
        figs[name] = apply_view(name, figs[name], x=x, logx=controls.logx,
                                xrange=controls.xrange,
                                smooth=0.0 if grouped else controls.smooth)
    if grouped:
        figs.update(_grouped_figures(client, gviews, runs, figs, opts, x, controls))
    state = _state(source, views, cursors, runs)
    # Patches extend traces by index, in steps: a view that changes either is rebuilt.
    state["derived"] = grouped or controls.smooth > 0 or x.axis != "step"
    # What the page picks by itself for these runs: the URL leaves such a choice out unless
    # the reader made it (viewsync.url), so a page that merely opens keeps its address.
    state["auto"] = {"group": any(len(g.run_ids) > 1 for g in groups) if groups else None,
                     "logy": list(paper_log(runs))}
    notice = " ".join(n for n in (missing_note(source, runs), x.notice) if n)
    return Result(figs, state, runs, title, notice=notice,
                  log=controls.log if choose_log else None,
                  grouped=grouped if controls.group is None else None)


def decide_groups(client: ApiClient, source: dict[str, Any], runs: list[dict[str, Any]],
                  controls: Controls) -> tuple[list[Group], bool]:
    """The runs' seed groups and whether the page draws by group: as asked, else when some
    group has several runs (the page's prefetch decides the same way)."""
    groups = _groups(client, source, runs) if controls.group is not False and runs else []
    grouped = bool(groups) and (controls.group if controls.group is not None
                                else any(len(g.run_ids) > 1 for g in groups))
    return groups, grouped


def _groups(client: ApiClient, source: dict[str, Any], runs: list[dict[str, Any]]
            ) -> list[Group]:
    """A page's seed groups follow from its runs' specs, which never change, and from which
    runs there are: cached by the runs' ids (a run added or deleted makes another key), so
    the build after a page's prefetch, and every reopening, reuse one GET /groups."""
    key = ("groups", client.base_url, json.dumps(source, sort_keys=True),
           tuple(sorted(r["id"] for r in runs)))
    return CACHE.get_or_fetch(key, True, lambda: _fetch_groups(client, source, runs))


def _fetch_groups(client: ApiClient, source: dict[str, Any], runs: list[dict[str, Any]]
                  ) -> list[Group]:
    if source.get("experiment") is not None:
        return client.groups(experiment_id=int(source["experiment"]))
    # The runs found: a compare link may name runs deleted since (the API would 404).
    return client.groups(runs=[r["id"] for r in runs])


def _walls(client: ApiClient, runs: list[dict[str, Any]]
           ) -> dict[int, tuple[list[float], list[float]]]:
    """Each run's (steps, seconds) of training, for the wall-time axis; a run without the
    series is left out (the page then says so and shows steps)."""
    got = client.map(lambda r: client.metrics(r["id"], WALL_KEY, max_points=100_000), runs)
    out = {}
    for run, series in zip(runs, got, strict=True):
        s = series.get(WALL_KEY)
        wall = interp_wall(s.steps, s.values) if s else None
        if wall:
            out[run["id"]] = wall
    return out


def _grouped_figures(client: ApiClient, gviews: list[gp.GroupView],
                     runs: list[dict[str, Any]], singles: dict[str, Any], opts: Options,
                     x: XAxis, controls: Controls) -> dict[str, Any]:
    """The figures drawn by group, over the single runs' lines (faint) when asked for."""
    data = gp.fetch(client, [gv.group for gv in gviews], list(gp.GROUPED_FIGURES),
                    center=controls.center, band=controls.band, step_range=opts.step_range,
                    finished=gp.finished_ids(runs))
    out = {}
    for name in gp.GROUPED_FIGURES:
        fig = gp.build(name, gviews, data[name], opts, x, smooth=controls.smooth,
                       center=controls.center, band=controls.band)
        # The groups' traces are mapped to x already (they belong to no single run): this
        # sets the axes' titles, log x, range and marks.
        fig = apply_view(name, fig, x=x, logx=controls.logx, xrange=controls.xrange,
                         smooth_runs=False)
        if controls.single:
            fig["data"] = faint_singles(singles[name]["data"]) + fig["data"]
        out[name] = fig
    return out


def relog(state: dict[str, Any], controls: Controls) -> Result:
    views = _views(state)
    opts = options(controls, views)
    figs = {name: figures.relog(name, views, opts) for name in FIGURES}
    return Result(figs, state)


def rebuild_hists(client: ApiClient, state: dict[str, Any], controls: Controls) -> Result:
    views = _views(state)
    opts = options(controls, views)
    lo, hi = opts.step_range if opts.step_range else (None, None)
    finished = {int(k): c["done"] for k, c in state["cursors"].items()}
    hists = client.map(lambda v: fetch_hists(client, v.id, opts.layer, opts.scope, lo, hi,
                                              finished=finished.get(v.id, False)), views)
    cursors = _cursors(state)
    for v, h in zip(views, hists, strict=True):
        cursors[v.id].hist_step = max((x.step for x in h), default=-1)
    frame = Frame(hists={v.id: h for v, h in zip(views, hists, strict=True)})
    final = all(c.done for c in cursors.values())
    figs: dict[str, Any] = {name: None for name in FIGURES}
    figs.update({name: figures.build_dict(name, views, frame, opts, final=final)
                 for name in HIST_FIGURES})
    new = {**state, "cursors": {str(k): c.to_dict() for k, c in cursors.items()}}
    return Result(figs, new)


def poll(client: ApiClient, state: dict[str, Any], controls: Controls) -> Result:
    source = state["source"]
    if state.get("derived"):
        return full_build(client, source, controls)
    runs, title = load_runs(client, source)
    views = _views(state)
    cursors = _cursors(state)
    by_id = {r["id"]: r for r in runs}
    if _needs_rebuild(state, runs, cursors, views):
        return full_build(client, source, controls)
    opts = options(controls, views)
    # A queued run writes nothing (not even one handed back by a stopping worker): skip it
    # until a worker takes it; one worker trains an experiment's runs one after another.
    active = [v for v in views if v.id in by_id and not cursors[v.id].done
              and by_id[v.id]["status"] != "queued"]
    fetched: dict[int, Fetched] = dict(zip(
        [v.id for v in active],
        client.map(lambda v: fetch_new(client, by_id[v.id], cursors[v.id], layer=opts.layer,
                                       scope=opts.scope, step_range=opts.step_range), active),
        strict=True,
    ))
    frame = frame_of(fetched, cursors)
    figs = {name: figures.extend(name, views, frame, opts) for name in FIGURES}
    for rid, f in fetched.items():
        cursors[rid] = f.cursor
    for rid in cursors:
        if rid not in by_id:  # deleted meanwhile: nothing more will come
            cursors[rid].done = True
    return Result(figs, _state(source, views, cursors, runs), runs, title,
                  notice=missing_note(source, runs))


def _needs_rebuild(state: dict[str, Any], runs: list[dict[str, Any]],
                   cursors: dict[int, Cursor], views: list[RunView]) -> bool:
    """A run diverged since the last build (its marks belong in the layout), a live series
    outgrew its budget, or the set of runs changed."""
    before = state.get("diverged", {})
    if any(r.get("diverged_at") != before.get(str(r["id"])) for r in runs):
        return True
    if {r["id"] for r in runs} - {v.id for v in views}:
        return True
    return any(c.points > REBUILD_POINTS for c in cursors.values())


def safe_update(client: ApiClient, action: str, source: dict[str, Any],
                state: dict[str, Any] | None, controls: Controls) -> Result:
    """`update`, with an unreachable or refusing API said on the page instead of raised:
    figures stay as they are and the next poll tries again."""
    try:
        return update(client, action, source, state, controls)
    except Gone as exc:  # nothing left to compare: stop asking, and say why
        return _unchanged(source, state, str(exc), stop=True, gone=True)
    except ApiError as exc:
        # A 404 mid-build: a run deleted while its data was read; stop asking (a change of
        # the view rebuilds the page without it).
        return _unchanged(source, state, f"Could not load data: {exc.message}",
                          stop=exc.status == 404)


def _unchanged(source: dict[str, Any], state: dict[str, Any] | None, notice: str, *,
               stop: bool, gone: bool = False) -> Result:
    figs: dict[str, Any] = {name: None for name in FIGURES}
    keep = state or {"source": source, "views": [], "cursors": {}, "stopped": False}
    if stop:
        keep = {**keep, "stopped": True}
    return Result(figs, keep, notice=notice, gone=notice if gone else "")
