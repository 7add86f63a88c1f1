"""Fetching what the compare view draws, all at once or incrementally, and the per-run cursor
that says what has been drawn already.

The incremental rule (why it never loses or repeats a point) asks of the engine only that
each key's points are written in step order; keys may lag each other (a timed flush can fall
between a step's loss and its probes, and the engine emits training accuracy for a window of
steps at once, after later losses). So the next fetch starts at the earliest step any key
may still be missing, min over keys of (its last drawn step + 1), and keeps per key only the
steps after its last drawn one. A key seen for the first time is fetched from the start as
well, since its first points may lie before that. Probe records and histograms are streams
of their own, each written in step order: they resume one step after the last one drawn.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from webapp.client import ApiClient, ApiError, EtaRecord, Histogram, Series
from webapp.figures import METRIC_KEYS
from webapp.figures.common import Frame
from webapp.figures.etas import drawn_every
from webapp.style import FINISHED

MAX_POINTS = 300  # per series and run: one every ~2 pixels of a half-width panel
# Live updates append raw points; past this many on a dense series the view is rebuilt
# (downsampled again) rather than growing without bound.
REBUILD_POINTS = 4 * MAX_POINTS
T = TypeVar("T")


class FinishedCache:
    """What a finished run stored never changes, so a page reopened, or redrawn for another
    arrangement, need not fetch it again. Bounded (least recently used goes first); only
    runs that had finished before the fetch began are kept.

    Concurrent fetches of one key coalesce: the first caller fetches, the others wait for
    its value (a page's build waits for the prefetch its page request started, prefetch.py,
    rather than fetching the same data twice). Should that fetch fail, each waiter fetches
    for itself: a failure may be the first caller's own (its token, say)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._pending: dict[tuple, Future] = {}
        self._lock = threading.Lock()

    def get_or_fetch(self, key: tuple, finished: bool, fetch: Callable[[], T]) -> T:
        if not finished:
            return fetch()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = Future()
                fetching = True
            else:
                fetching = False
        if not fetching:
            try:
                return pending.result()
            except Exception:  # noqa: BLE001 - theirs failed: try ours
                return fetch()
        try:
            value = fetch()
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            self._items[key] = value
            del self._pending[key]
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        pending.set_result(value)
        return value

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


CACHE = FinishedCache()


@dataclass
class Cursor:
    """What one run's figures hold already."""

    keys: dict[str, float] = field(default_factory=dict)  # key -> last step drawn
    last: dict[str, float] = field(default_factory=dict)  # key -> last finite value drawn
    eta_step: int = -1  # last probed step drawn (Fig 11)
    hist_step: int = -1  # last histogram step drawn, for the layer/scope shown
    points: int = 0  # raw points appended live to the densest series since the last build
    done: bool = False  # finished, and everything it wrote is drawn

    def next_since(self, lo: int = 0) -> int:
        """Where the next metrics fetch starts: no key can still be missing a point before."""
        return max(lo, min((int(v) + 1 for v in self.keys.values()), default=lo))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cursor:
        return cls(**d)


@dataclass
class Fetched:
    """One run's new data, and the cursor after drawing it."""

    metrics: dict[str, Series]
    etas: list[EtaRecord]
    hists: list[Histogram]
    cursor: Cursor


def eta_every(run: dict[str, Any]) -> int | None:
    """Fig 11 draws a readable number of probed steps (figures/etas.py): fetch only those."""
    landscape = run.get("spec", {}).get("probes", {}).get("landscape", {})
    return drawn_every(int(landscape.get("every") or 0), int(run.get("total") or 0))


def _within(step: float, until: int | None) -> bool:
    return until is None or step <= until


def fetch_full(client: ApiClient, run: dict[str, Any], *, layer: int, scope: str,
               step_range: tuple[int, int] | None, hists: bool = True,
               scalars: bool = True) -> Fetched:
    """Everything in the range (downsampled past MAX_POINTS) and a fresh cursor. Without
    `scalars`, the per-eta records and histograms only: a page drawn by seed group gets its
    scalar figures' lines from the server's group statistics instead."""
    lo, hi = step_range if step_range else (None, None)
    rid = run["id"]
    finished = run["status"] in FINISHED  # read before the fetch: nothing is written after

    def scalars_and_etas() -> tuple[dict[str, Series], list[EtaRecord]]:
        metrics = (client.metrics(rid, METRIC_KEYS, since_step=lo, until_step=hi,
                                  max_points=MAX_POINTS) if scalars else {})
        etas = client.probes(rid, since_step=lo, every=eta_every(run))
        return metrics, [r for r in etas if _within(r.step, hi)]

    metrics, etas = CACHE.get_or_fetch((client.base_url, rid, lo, hi, scalars), finished,
                                       scalars_and_etas)
    hist = fetch_hists(client, rid, layer, scope, lo, hi, finished=finished) if hists else []
    cursor = Cursor(done=finished)
    advance(cursor, metrics, etas, hist)
    return Fetched(metrics, etas, hist, cursor)


def fetch_hists(client: ApiClient, run_id: int, layer: int, scope: str,
                since: int | None, until: int | None, *, finished: bool = False
                ) -> list[Histogram]:
    def fetch() -> list[Histogram]:
        try:
            out = client.distributions(run_id, layer=layer, scope=scope, since_step=since)
        except ApiError as exc:  # a layer the run does not have: nothing to draw
            if exc.status == 422:
                return []
            raise
        return [h for h in out if _within(h.step, until)]

    key = (client.base_url, run_id, "hists", layer, scope, since, until)
    return CACHE.get_or_fetch(key, finished, fetch)


def fetch_new(client: ApiClient, run: dict[str, Any], cursor: Cursor, *, layer: int,
              scope: str, step_range: tuple[int, int] | None) -> Fetched:
    """What arrived since `cursor`, with each key's already-drawn steps left out."""
    lo, hi = step_range if step_range else (0, None)
    finished = run["status"] in FINISHED
    since = cursor.next_since(lo)
    raw = client.metrics(run["id"], METRIC_KEYS, since_step=since, until_step=hi,
                         max_points=1_000_000)
    fresh = [k for k in raw if k not in cursor.keys]
    if fresh and since > lo:  # new keys: their first points may lie before `since`
        early = client.metrics(run["id"], ",".join(fresh), since_step=lo, until_step=since - 1,
                               max_points=1_000_000)
        raw.update({k: _join(early[k], raw[k]) for k in fresh if k in early})
    metrics = {k: _after(s, cursor.keys.get(k, -1)) for k, s in raw.items()}
    new = Cursor(**{**cursor.to_dict(), "done": finished})
    for k in fresh:  # looked at from lo on and found nothing in range: do not look again
        if not raw[k].steps:
            new.keys[k] = since - 1
    etas = [r for r in client.probes(run["id"], since_step=max(cursor.eta_step + 1, lo),
                                     every=eta_every(run)) if _within(r.step, hi)]
    hist = fetch_hists(client, run["id"], layer, scope, max(cursor.hist_step + 1, lo), hi)
    advance(new, metrics, etas, hist)
    new.points += max((len(s) for s in metrics.values()), default=0)
    return Fetched(metrics, etas, hist, new)


def _join(a: Series, b: Series) -> Series:
    return Series(b.key, a.steps + b.steps, a.values + b.values)


def _after(s: Series, last: float) -> Series:
    keep = [i for i, step in enumerate(s.steps) if step > last]
    if len(keep) == len(s.steps):
        return s
    return Series(s.key, [s.steps[i] for i in keep], [s.values[i] for i in keep])


def advance(cursor: Cursor, metrics: dict[str, Series], etas: list[EtaRecord],
            hists: list[Histogram]) -> None:
    """Move the cursor past what is about to be drawn."""
    for key, s in metrics.items():
        if not s.steps:
            continue
        # A downsampled bucket's step is its midpoint: later raw points of that bucket are
        # still drawn after it, in step order, so nothing goes backwards.
        cursor.keys[key] = math.floor(s.steps[-1])
        finite = [v for v in s.values if math.isfinite(v)]
        if finite:
            cursor.last[key] = finite[-1]
    if etas:
        cursor.eta_step = max(cursor.eta_step, max(r.step for r in etas))
    if hists:
        cursor.hist_step = max(cursor.hist_step, max(h.step for h in hists))


def frame_of(fetched: dict[int, Fetched], before: dict[int, Cursor] | None = None) -> Frame:
    """The figures' input: new data by run, and where each run's lines left off."""
    before = before or {}
    return Frame(
        metrics={rid: f.metrics for rid, f in fetched.items()},
        etas={rid: f.etas for rid, f in fetched.items()},
        hists={rid: f.hists for rid, f in fetched.items()},
        last={rid: dict(before[rid].last) if rid in before else {} for rid in fetched},
    )


class Gone(Exception):
    """Nothing to compare: the experiment does not exist or has no runs left, or none of the
    runs asked for exists. The message says which, for the page to show instead of empty
    figures."""


def _runs_text(ids: list[int]) -> str:
    return ("run " if len(ids) == 1 else "runs ") + ", ".join(f"#{i}" for i in ids)


def load_runs(client: ApiClient, source: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The runs a page compares, and a title: an experiment's runs, or a list of run ids
    (ones that no longer exist are skipped: missing_note says which). Raises Gone when
    there is nothing to compare."""
    if source.get("experiment") is not None:
        eid = int(source["experiment"])
        try:
            exp = client.experiment(eid)
        except ApiError as exc:
            if exc.status == 404:
                raise Gone(f"Experiment {eid} not found.") from exc
            raise
        if not exp["runs"]:
            raise Gone(f"Experiment {eid} ({exp['name']}) has no runs left: they were "
                       "deleted.")
        varies = ", ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}"
                           for k, v in (exp.get("vary") or {}).items())
        return exp["runs"], f"{exp['name']} · experiment {exp['id']}" + (
            f" · {varies}" if varies else "")
    runs = []
    for rid in source.get("runs", []):
        try:
            runs.append(client.run(int(rid)))
        except ApiError as exc:
            if exc.status != 404:
                raise
    if not runs:
        missing = [int(i) for i in source.get("runs", [])]
        raise Gone(f"{_runs_text(missing).capitalize()} not found: deleted, or never "
                   "created.")
    return runs, "compare runs " + ", ".join(str(r["id"]) for r in runs)


def missing_note(source: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """Which of the run ids a page asked for are not among `runs` (deleted since the link
    was made), as a sentence; "" when none is missing."""
    found = {r["id"] for r in runs}
    missing = [int(i) for i in source.get("runs", []) if int(i) not in found]
    if not missing:
        return ""
    return (f"{_runs_text(missing).capitalize()} not found (deleted, or never created): "
            "showing the others.")
