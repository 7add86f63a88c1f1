"""landscope.Client: read what a Landscope server holds, as pandas DataFrames, in a notebook.

    client = landscope.Client("http://127.0.0.1:8000")
    runs = client.runs(experiment="sweep")              # one row per run, config spread out
    m = client.metrics(runs.id, keys="train/*")          # long: run_id, key, step, value
    m.pivot_table(index="step", columns=["run_id", "key"], values="value")

Everything goes through the REST API (docs/api.md), as the dashboard does: whatever a
server's route caps per request (list pages, probe and histogram limits, the downsampling of
wide metric ranges) is paged here, so a frame holds every row asked for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from landscope.client import frames as f
from landscope.client import paging
from landscope.client.analysis import Analysis
from landscope.client.errors import LandscopeError
from landscope.client.http import Http
from landscope.client.paging import exact_key, list_pages, raw_series, step_pages

FINISHED = frozenset({"succeeded", "failed", "diverged", "cancelled", "crashed"})


def _ids(run_ids: Any) -> list[int]:
    """One id, or any iterable of them (a list, a DataFrame column)."""
    if isinstance(run_ids, int | str) or not isinstance(run_ids, Iterable):
        return [int(run_ids)]
    return [int(i) for i in run_ids]


def _keys(keys: str | Iterable[str] | None) -> tuple[str | None, set[str] | None]:
    """`keys` as the API's query parameter, and the exact keys to keep from its answer.

    A string is passed as the API reads it (comma-separated exact keys and globs); a list
    names exact keys, escaped so that `*?[` match themselves. A key with a comma cannot be
    named in the list: then every key is asked for and the answer filtered here."""
    if keys is None or isinstance(keys, str):
        return keys, None
    names = list(keys)
    escaped = [exact_key(k) for k in names]
    if any(e is None for e in escaped):
        return None, set(names)
    return ",".join(e for e in escaped if e is not None), None


def _group_ids(groups: Any) -> list[Any]:
    """Run ids per group from lists of ids, `groups()`'s frame or its records."""
    if hasattr(groups, "columns") and "run_ids" in groups.columns:
        return list(groups["run_ids"])
    return [g["run_ids"] if isinstance(g, dict) else g for g in groups]


def _env_token() -> str | None:
    from server.settings import get_settings  # the one reader of LANDSCOPE_* (no torch)

    secret = get_settings().api_token
    return secret.get_secret_value() if secret is not None else None


class Client:
    """A Landscope server's REST API, read into DataFrames (pass `raw=True` for records).

    `token`: sent as a bearer token (needed for reads when the server sets
    LANDSCOPE_PROTECT_READS); default LANDSCOPE_API_TOKEN, as for the SDK and the CLI.
    `retries`: how often a read is retried when the server cannot be reached or answers 503.
    `parallel`: runs fetched at once by multi-run reads."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, *,
                 timeout: float = 30.0, retries: int = 3, parallel: int = 8,
                 http: httpx.Client | None = None) -> None:
        self._http = Http(url, token if token is not None else _env_token(), timeout=timeout,
                          retries=retries, http=http)
        self.url = self._http.base
        self.parallel = max(1, parallel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def get(self, path: str, **params: Any) -> Any:
        """Any GET route under /api/v1 as JSON (non-finite numbers still as strings)."""
        return self._http.get(path, params)

    def _map(self, fn, items: list[Any]) -> list[Any]:
        if len(items) <= 1 or self.parallel == 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(items))) as pool:
            return list(pool.map(fn, items))

    # -- experiments and runs -----------------------------------------------------------------

    def experiments(self, *, raw: bool = False):
        """Every experiment, newest first, with its runs counted by status (`runs_<status>`)."""
        items = list_pages(self._http.get, "/experiments", {})
        if raw:
            return items
        return f.frame((f.experiment_record(e) for e in items), f.EXPERIMENT_COLUMNS)

    def experiment(self, experiment_id: int) -> dict[str, Any]:
        """One experiment with its runs, as the API sends it."""
        return self._http.get(f"/experiments/{int(experiment_id)}")

    def _experiment_ids(self, experiment: int | str) -> list[int]:
        if not isinstance(experiment, str):  # an id; a name is always a string ("2024" too)
            return [int(experiment)]
        found = [e["id"] for e in list_pages(self._http.get, "/experiments", {})
                 if e["name"] == experiment]
        if not found:
            raise LandscopeError(404, f"no experiment named {experiment!r}",
                                 method="GET", url=self.url + "/experiments")
        return found

    def runs(self, experiment: int | str | None = None, status: str | None = None, *,
             name: str | None = None, flat: bool = True, raw: bool = False):
        """Runs, newest first. `experiment`: an id, or a name (every experiment of that name);
        `name`: a substring of the run's name, any case. With `flat`, each run's spec and
        config are spread into dotted columns (`config.lr`, `spec.norm`) to group and plot by."""
        base = {"status": status, "name": name}
        if experiment is None:
            items = list_pages(self._http.get, "/runs", base)
        else:
            items = [r for eid in self._experiment_ids(experiment)
                     for r in list_pages(self._http.get, "/runs", {**base, "experiment_id": eid})]
        if raw:
            return items
        return f.frame((f.run_record(r, flat=flat) for r in items), f.RUN_COLUMNS)

    def run(self, run_id: int) -> dict[str, Any]:
        """One run as the API sends it (status, progress, spec or config, error...)."""
        return self._http.get(f"/runs/{int(run_id)}")

    def keys(self, run_id: int) -> list[str]:
        """The metric keys the run has recorded, sorted."""
        return self._http.get(f"/runs/{int(run_id)}/keys")["keys"]

    def wait(self, run_id: int, timeout: float = 600.0, poll: float = 1.0) -> dict[str, Any]:
        """Poll until the run has finished (any final status); the run. TimeoutError after
        `timeout` seconds, naming the status it was left in."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['status']} after {timeout:g} s")
            time.sleep(poll)

    # -- measurements -------------------------------------------------------------------------

    def metrics(self, run_ids: Any, keys: str | Iterable[str] | None = None, *,
                max_points: int | None = None, since_step: int | None = None,
                until_step: int | None = None, raw: bool = False):
        """Scalar series of one run or many, long form: run_id, key, step, value.

        `keys`: a string of comma-separated exact keys and globs (`"train/*,test/acc"`), or a
        list of exact keys; none means every key.
        `max_points` None reads every point (paged). A number lets the server downsample a
        series whose step range is wider: its rows are then buckets (step = midpoint, value =
        mean of the finite points) and the frame gains min, max (finite envelope), count,
        nonfinite and downsampled. NaN and +-inf are kept as values."""
        wanted, only = _keys(keys)

        def one(run_id: int) -> list[dict[str, Any]]:
            path = f"/runs/{run_id}/metrics"
            if max_points is None:
                series = raw_series(self._http.get, path, wanted, since_step, until_step,
                                    only)
            else:
                series = self._http.get(path, {"keys": wanted, "since_step": since_step,
                                               "until_step": until_step,
                                               "max_points": max_points})["series"]
            if only is not None:
                series = {k: v for k, v in series.items() if k in only}
            return f.metric_records(run_id, series)

        records = [r for part in self._map(one, _ids(run_ids)) for r in part]
        return records if raw else f.metrics_frame(records)

    def probe_records(self, run_ids: Any, probe: str | None = None, *,
                      since_step: int | None = None, every: int | None = None,
                      raw: bool = False):
        """Every step size of the landscape probes (Fig 11): run_id, probe, step, multiplier,
        eta, loss, grad_dist. `every`: only steps that are multiples of it, plus every record
        with a non-finite value."""
        def one(run_id: int) -> list[dict[str, Any]]:
            records = step_pages(self._http.get, f"/runs/{run_id}/probes",
                                 {"probe": probe, "since_step": since_step, "every": every},
                                 page=paging.PROBE_PAGE, largest=paging.PROBE_LARGEST)
            return f.probe_records(run_id, records)

        records = [r for part in self._map(one, _ids(run_ids)) for r in part]
        return records if raw else f.frame(records, f.PROBE_COLUMNS)

    def distributions(self, run_ids: Any, layer: int | None = None, scope: str | None = None,
                      *, since_step: int | None = None, raw: bool = False):
        """Activation histograms per normalised layer (scope "layer") and its sampled unit
        ("unit"): bin counts over [lo, hi] as a list per row, plus under/overflow, the
        non-finite count, mean, var and the quantiles as columns."""
        def one(run_id: int) -> list[dict[str, Any]]:
            records = step_pages(self._http.get, f"/runs/{run_id}/distributions",
                                 {"layer": layer, "scope": scope, "since_step": since_step},
                                 page=paging.HIST_PAGE, largest=paging.HIST_LARGEST)
            return f.distribution_records(run_id, records)

        records = [r for part in self._map(one, _ids(run_ids)) for r in part]
        return records if raw else f.frame(records, f.DISTRIBUTION_COLUMNS)

    # -- seed groups --------------------------------------------------------------------------

    def groups(self, runs: Any = None, experiment: int | str | None = None, *,
               raw: bool = False):
        """Seed groups (runs that differ only in their seed) of these runs or of an
        experiment's (an id, or a name: every experiment of that name): one row per group,
        with `group` (its position), key, label (what tells the groups apart), run_ids and
        seeds. Pass the frame, or its run_ids, to `grouped_metrics`."""
        if (runs is None) == (experiment is None):
            raise ValueError("give either runs or experiment")
        if runs is None:
            ids = self._experiment_ids(experiment)  # type: ignore[arg-type]
            if len(ids) == 1:
                body = self._http.get("/groups", {"experiment_id": ids[0]})
                return body["groups"] if raw else f.frame(f.group_records(body["groups"]),
                                                          f.GROUP_COLUMNS)
            runs = [r["id"] for eid in ids
                    for r in list_pages(self._http.get, "/runs", {"experiment_id": eid})]
        body = self._http.get("/groups", {"runs": ",".join(map(str, _ids(runs)))})
        return body["groups"] if raw else f.frame(f.group_records(body["groups"]),
                                                  f.GROUP_COLUMNS)

    def grouped_metrics(self, groups: Any, keys: str | Iterable[str] | None = None, *,
                        center: str = "median", band: str = "minmax", max_points: int = 300,
                        since_step: int | None = None, until_step: int | None = None,
                        raw: bool = False):
        """Each group's runs as one line with a band, long form: group (the position in
        `groups`), key, step, center, lo, hi, n, nonfinite. Computed by the server per step
        bucket across the group's runs (docs/api.md): center the median or mean of the
        runs' bucket means, lo/hi their min/max (band="minmax") or mean -/+ std ("std"),
        n the runs with a finite value, nonfinite those whose points were all NaN or inf.

        `groups`: lists of run ids, or the frame (or records) `groups()` returns. `keys` as
        for `metrics`; the bucket grid is shared by every group and key of the request (a
        key holding a comma is read with every key, so the grid is then every key's)."""
        wanted, only = _keys(keys)
        body = self._http.get("/groups/metrics", {
            "group": [",".join(map(str, _ids(g))) for g in _group_ids(groups)],
            "keys": wanted, "center": center, "band": band, "max_points": max_points,
            "since_step": since_step, "until_step": until_step})
        records = f.grouped_records(body["groups"], only)
        return records if raw else f.frame(records, f.GROUPED_COLUMNS)

    # -- analyses -----------------------------------------------------------------------------

    def analyses(self, run_id: int | None = None, experiment_id: int | None = None, *,
                 group_id: int | None = None, status: str | None = None, raw: bool = False):
        """Analyses (surfaces, slices, trajectories, spectra), newest first, without their
        arrays: read one with `analysis(id)`."""
        items = list_pages(self._http.get, "/analyses", {
            "run_id": run_id, "experiment_id": experiment_id, "group_id": group_id,
            "status": status})
        if raw:
            return items
        return f.frame((f.analysis_record(a) for a in items), f.ANALYSIS_COLUMNS)

    def analysis(self, analysis_id: int) -> Analysis:
        """One analysis with its grids as numpy arrays per step (`.at(step)`) and its values;
        `.frame()` is the tidy DataFrame of its grid points."""
        return Analysis.from_json(self._http.get(f"/analyses/{int(analysis_id)}"))

    def wait_analysis(self, analysis_id: int, timeout: float = 600.0,
                      poll: float = 1.0) -> Analysis:
        """Poll until the analysis has finished; it, with its results."""
        deadline = time.monotonic() + timeout
        while True:
            a = self.analysis(analysis_id)
            if a.status in FINISHED:
                return a
            if time.monotonic() > deadline:
                raise TimeoutError(f"analysis {analysis_id} still {a.status} after {timeout:g} s")
            time.sleep(poll)
