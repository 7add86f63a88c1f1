"""Start fetching a compare page's data as soon as a browser asks for the page itself.

Between serving a page's HTML and the request that builds its figures, the server waits
about half a second while the browser loads and compiles the dashboard's JavaScript
(bench/RESULTS.md). So when it serves the HTML of an experiment or compare page, it fetches
the finished runs' data into the finished-run cache in the background, exactly as the page's
first build will ask for it, and the build finds it there. A build that starts before the
prefetch ends waits for it (FinishedCache coalesces fetches) rather than fetching twice.
A page drawn by seed group gets its groups' statistics prefetched too, once all its runs
have finished (grouped.fetch caches them only then).

Running runs are left alone: their data changes, so it is never cached. The prefetch runs
with the requesting browser's token, and a failure costs nothing but the head start.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import flask
from dash import Dash
from dash.exceptions import UnsupportedRelativePath

from webapp.client import ApiClient, ApiError
from webapp.compare import grouped as gp
from webapp.compare.data import Gone, fetch_full, load_runs
from webapp.compare.update import Controls, decide_groups, options
from webapp.runsets import build_views
from webapp.style import FINISHED

log = logging.getLogger(__name__)

# Two at a time: a burst of page requests must not become a burst of threads.
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="landscope-prefetch")
_running: set[tuple[str, str]] = set()
_lock = threading.Lock()

SourceOf = Callable[[str, Mapping[str, str]], dict[str, Any] | None]


def when_requested(app: Dash, client: ApiClient, source_of: SourceOf) -> None:
    """Prefetch for every GET of a page that `source_of(path, query)` recognises: it returns
    the page's source ({"experiment": 3}, {"runs": [1, 2]}) or None for any other path."""

    def hook() -> None:
        if flask.request.method != "GET":
            return
        try:
            path = app.strip_relative_path(flask.request.path) or ""
        except UnsupportedRelativePath:
            # Mounted below a prefix that a proxy strips before the request reaches us: the
            # path is already relative. Dash raises here, which made every GET a 500.
            path = flask.request.path.strip("/")
        source = source_of(path, flask.request.args)
        if source is not None:
            start(client, source)

    app.server.before_request(hook)


def start(client: ApiClient, source: dict[str, Any]) -> Future | None:
    """Prefetch `source` in the background, in the caller's context (its token); None when
    the same prefetch is already under way."""
    key = (client.base_url, json.dumps(source, sort_keys=True))
    with _lock:
        if key in _running:
            return None
        _running.add(key)
    future = _POOL.submit(contextvars.copy_context().run, prefetch, client, source)
    future.add_done_callback(lambda _f: _done(key))
    return future


def _done(key: tuple[str, str]) -> None:
    with _lock:
        _running.discard(key)


def prefetch(client: ApiClient, source: dict[str, Any]) -> int:
    """Fetch what the page's first build (update.full_build with the page's opening
    controls) will fetch for its finished runs; returns how many runs that was."""
    try:
        runs, _title = load_runs(client, source)
        views, opening = build_views(runs), Controls()
        opts = options(opening, views)
        # A page drawn by seed group reads no run's scalars and draws each group's first
        # run in its per-run figures (update.full_build).
        groups, grouped = decide_groups(client, source, runs, opening)
        gviews = gp.group_views(groups, runs) if grouped else []
        drawn = {v.id for v in gp.drawn_views(views, gviews, grouped, opening.single)}
        done = [r for r in runs if r["status"] in FINISHED and r["id"] in drawn]
        client.map(lambda run: fetch_full(client, run, layer=opts.layer, scope=opts.scope,
                                          step_range=opts.step_range, scalars=not grouped),
                   done)
        finished = gp.finished_ids(runs)
        if grouped and gp.all_finished(groups, finished):
            # ... and the groups' statistics, as update._grouped_figures will ask for them.
            gp.fetch(client, [gv.group for gv in gviews], list(gp.GROUPED_FIGURES),
                     center=opening.center, band=opening.band, step_range=opts.step_range,
                     finished=finished)
    except (ApiError, Gone) as exc:  # the page's own request will say what is wrong
        log.debug("prefetch of %s stopped: %s", source, exc)
        return 0
    return len(done)
