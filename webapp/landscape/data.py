"""What the Landscape tab reads from the API and how it groups it: the experiment's runs and
analyses, analyses gathered by request (one POST over an experiment analyses every run with
the same spec and shares a group_id), and each group's details with its grids.

A finished analysis never changes: its detail is cached (compare.data.FinishedCache), so
moving the step slider or switching the colour scale fetches nothing again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webapp.client import ApiClient
from webapp.compare.data import FinishedCache
from webapp.figures.geometry import (
    BN_TEXT,
    Grid,
    all_grids,
    directions_text,
    evals_text,
    shared_range,
    steps_of,
)
from webapp.runsets import RunView, build_views

FINISHED = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE = frozenset({"queued", "running"})
KIND_ORDER = ("surface", "slice", "trajectory", "spectrum")
CACHE = FinishedCache(size=128)


@dataclass
class Group:
    """The analyses one request created (one per run)."""

    id: int
    kind: str
    bn_mode: str
    analyses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        statuses = {a["status"] for a in self.analyses}
        for s in ("running", "queued", "failed", "cancelled"):
            if s in statuses:
                return s
        return "succeeded"

    @property
    def active(self) -> bool:
        return any(a["status"] in ACTIVE for a in self.analyses)

    def progress(self) -> tuple[int, int]:
        done = sum(int((a.get("progress") or {}).get("done") or 0) for a in self.analyses)
        total = sum(int((a.get("progress") or {}).get("total") or 0) for a in self.analyses)
        return done, total

    def label(self) -> str:
        steps = (self.analyses[0].get("spec") or {}).get("steps") if self.analyses else None
        at = f" · steps {', '.join(map(str, steps))}" if steps else ""
        bn = BN_TEXT.get(self.bn_mode, self.bn_mode)
        along = f" · {directions_text(self.analyses[0])}" if self.analyses and \
            self.kind in ("surface", "slice") else ""
        ev = evals_text(self.analyses)
        on = f" · {ev}" if ev else ""
        return (f"#{self.id} {self.kind}{along} · BN {bn}{on}{at} · {len(self.analyses)} "
                f"run(s) · {self.status}")


def groups_of(analyses: list[dict[str, Any]]) -> list[Group]:
    """Analyses gathered by group, newest group first, each group's analyses by run."""
    groups: dict[int, Group] = {}
    for a in analyses:
        g = groups.setdefault(int(a["group_id"]), Group(int(a["group_id"]), a["kind"],
                                                        a.get("bn_mode") or ""))
        g.analyses.append(a)
    for g in groups.values():
        g.analyses.sort(key=lambda a: (a["run_id"], a["id"]))
    return sorted(groups.values(), key=lambda g: -g.id)


def default_selection(groups: list[Group]) -> list[int]:
    """What the tab shows first: the newest group of each kind that has, or will have,
    something to draw, in the order surfaces, slices, trajectories, spectra."""
    chosen: dict[str, int] = {}
    for g in groups:  # newest first
        if g.kind not in chosen and g.status in ("succeeded", "running", "queued"):
            chosen[g.kind] = g.id
    return [chosen[k] for k in KIND_ORDER if k in chosen]


def load_runs(client: ApiClient, experiment_id: int) -> list[RunView]:
    return build_views(client.runs(experiment_id=experiment_id, limit=500))


def load_analyses(client: ApiClient, experiment_id: int) -> list[dict[str, Any]]:
    return client.analyses(experiment_id=experiment_id)


def detail(client: ApiClient, summary: dict[str, Any]) -> dict[str, Any]:
    """An analysis with its arrays: from the cache once it has finished."""
    finished = summary["status"] in FINISHED
    # created_at too: an id freed by a delete may be given to a new analysis
    key = (client.base_url, "analysis", summary["id"], summary.get("created_at"))
    return CACHE.get_or_fetch(key, finished, lambda: client.analysis(summary["id"]))


@dataclass
class Loaded:
    """Everything the figures of the selected groups need."""

    views: dict[int, RunView]
    groups: dict[int, Group]
    details: dict[int, dict[str, Any]]  # analysis id -> detail

    def items(self, group_id: int) -> list[tuple[RunView, dict[str, Any]]]:
        """(run, detail) of a group's analyses, in the runs' display order."""
        g = self.groups.get(group_id)
        if g is None:
            return []
        order = {rid: i for i, rid in enumerate(self.views)}
        pairs = [(self.views[a["run_id"]], self.details[a["id"]]) for a in g.analyses
                 if a["run_id"] in self.views and a["id"] in self.details]
        return sorted(pairs, key=lambda p: order[p[0].id])

    def zrange(self, group_id: int, log: bool, metric: str = "loss"
               ) -> tuple[float, float] | None:
        """The group's one colour range: every run's finite values at every step."""
        grids: list[Grid] = all_grids([d for _v, d in self.items(group_id)], metric)
        return shared_range(grids, log)

    def steps(self, group_ids: list[int]) -> list[int]:
        """Every step analysed by the selected groups (trajectories draw their last only)."""
        out: set[int] = set()
        for gid in group_ids:
            g = self.groups.get(gid)
            if g is None or g.kind == "trajectory":
                continue
            for _v, d in self.items(gid):
                out.update(steps_of(d))
        return sorted(out)


def load(client: ApiClient, experiment_id: int, group_ids: list[int],
         summaries: list[dict[str, Any]] | None = None) -> Loaded:
    """Runs, and the details of the selected groups' analyses (fetched concurrently)."""
    views = {v.id: v for v in load_runs(client, experiment_id)}
    summaries = summaries if summaries is not None else load_analyses(client, experiment_id)
    groups = {g.id: g for g in groups_of(summaries)}
    wanted = [a for gid in group_ids if gid in groups for a in groups[gid].analyses]
    got = client.map(lambda a: detail(client, a), wanted)
    return Loaded(views, groups, {a["id"]: d for a, d in zip(wanted, got, strict=True)})


def fingerprint(summaries: list[dict[str, Any]], group_ids: list[int]) -> str:
    """Changes whenever a selected analysis gets new points or a new status: when the
    figures must be drawn again."""
    parts = sorted((a["id"], a["status"], (a.get("progress") or {}).get("done"))
                   for a in summaries if a["group_id"] in group_ids)
    return repr(parts)
