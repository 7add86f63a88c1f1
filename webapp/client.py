"""The dashboard's HTTP client for the REST API (docs/api.md): the only way the webapp reads
or changes anything, so the dashboard sees exactly what any other client sees.

Non-finite numbers arrive as the strings "NaN", "Infinity" and "-Infinity"; they are turned
back into floats here, so the figure code deals with plain floats and decides itself how to
show them (a gap and a marker, never a silent drop).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from webapp.records import (
    EtaRecord,
    Group,
    GroupSeries,
    Histogram,
    Series,
)

T = TypeVar("T")
R = TypeVar("R")


# The token of the browser whose callback is running (webapp/app.py reads it from a cookie per
# request). A context variable, so that concurrent callbacks of different users never see each
# other's token; `ApiClient.map` carries it into its worker threads.
_request_token: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "landscope_request_token", default=None)


@contextmanager
def acting_with(token: str | None) -> Iterator[None]:
    """API calls made inside this block send `token` (unless a call passes its own)."""
    reset = _request_token.set(token or None)
    try:
        yield
    finally:
        _request_token.reset(reset)


class ApiError(Exception):
    """A non-2xx answer (or no answer at all: status 0) with the API's `detail`."""

    def __init__(self, status: int, detail: Any, method: str = "", path: str = ""):
        self.status = status
        self.detail = detail
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: {status} {self.message}")

    @property
    def message(self) -> str:
        """A human sentence for any error shape (a 422 list joins its messages)."""
        if isinstance(self.detail, list):
            return "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg', '')}"
                for e in self.detail if isinstance(e, dict)
            )
        return str(self.detail)

    def field_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(loc, message) of a 422 body ({"detail": [{"loc": [...], "msg": ...}]})."""
        if self.status != 422 or not isinstance(self.detail, list):
            return []
        return [
            (tuple(e.get("loc", ())), str(e.get("msg", "")))
            for e in self.detail if isinstance(e, dict)
        ]


class ApiClient:
    """A thin typed wrapper over /api/v1. `http` may be any httpx.Client (tests pass
    FastAPI's TestClient); `parallel` bounds the threads of `map` (one per run fetched)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 15.0,
        http: httpx.Client | None = None,
        parallel: int = 8,
        public_url: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.parallel = max(1, parallel)
        # No keep-alive: a fresh local connection costs ~1 ms, and a server that does not set
        # TCP_NODELAY (as `landscope up` did not, before landscope/cli/api_cmd.py's bind() asked
        # for IPPROTO_TCP) makes every answer on a reused one wait ~40 ms for a delayed ACK.
        self.http = http or httpx.Client(
            timeout=timeout, limits=httpx.Limits(max_connections=32, max_keepalive_connections=0))
        # Mounted by `landscope up`, browsers reach the API on the dashboard's own origin:
        # links use the path only, so they work whatever host name the user typed. A
        # dashboard served apart from the API links to `public_url` instead.
        self.public_api = (public_url or urlsplit(self.base_url).path or "").rstrip("/")

    def close(self) -> None:
        self.http.close()

    # -- plumbing -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, params: dict | None = None,
                 json: Any = None, token: str | None = None,
                 headers: dict[str, str] | None = None) -> Any:
        headers = dict(headers or {})
        bearer = token or _request_token.get() or self.token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        try:
            resp = self.http.request(method, self.base_url + path, params=params, json=json,
                                     headers=headers)
        except httpx.HTTPError as exc:  # refused, reset, timed out: say so, do not crash a page
            raise ApiError(0, f"the API cannot be reached ({type(exc).__name__})", method,
                           path) from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ApiError(resp.status_code, detail, method, path)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """fn over items, concurrently: one run's fetch should not wait for another's."""
        items = list(items)
        if len(items) <= 1 or self.parallel == 1:
            return [fn(i) for i in items]
        # Each item runs in a copy of the caller's context: the request's token goes along.
        contexts = [contextvars.copy_context() for _ in items]
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(items))) as pool:
            return list(pool.map(lambda ctx, item: ctx.run(fn, item), contexts, items))

    # -- runs and experiments -----------------------------------------------------------------

    def presets(self) -> list[dict[str, Any]]:
        return self._request("GET", "/presets")

    def runs(self, *, status: str | None = None, experiment_id: int | None = None,
             name: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        params = {"status": status, "experiment_id": experiment_id, "name": name or None,
                  "limit": limit}
        return self._request("GET", "/runs", params=params)["items"]

    def run(self, run_id: int) -> dict[str, Any]:
        return self._request("GET", f"/runs/{run_id}")

    def experiment(self, experiment_id: int) -> dict[str, Any]:
        return self._request("GET", f"/experiments/{experiment_id}")

    def experiments(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first, each with its runs counted by status (`status_counts`)."""
        return self._request("GET", "/experiments",
                             params={"limit": limit, "offset": offset})["items"]

    def workers(self) -> list[dict[str, Any]]:
        return self._request("GET", "/workers")

    def limits(self) -> dict[str, Any]:
        """The server's LANDSCOPE_MAX_* limits (GET /limits)."""
        return self._request("GET", "/limits")

    def create_experiment(self, body: dict[str, Any], token: str | None = None,
                          idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._request("POST", "/experiments", json=body, token=token, headers=headers)

    def experiment_cost(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /experiments/cost: what launching `body` costs (training, the default
        analyses, snapshot disk; per run and in total); nothing is saved."""
        return self._request("POST", "/experiments/cost", json=body)

    def cancel_run(self, run_id: int, token: str | None = None) -> dict[str, Any]:
        return self._request("POST", f"/runs/{run_id}/cancel", token=token)

    def delete_run(self, run_id: int, token: str | None = None) -> None:
        self._request("DELETE", f"/runs/{run_id}", token=token)

    def delete_experiment(self, experiment_id: int, token: str | None = None) -> None:
        """DELETE /experiments/{id}: with all its runs; a 409 while one is queued or running."""
        self._request("DELETE", f"/experiments/{experiment_id}", token=token)

    # -- measurements -------------------------------------------------------------------------

    def metrics(self, run_id: int, keys: str | None = None, *, since_step: int | None = None,
                until_step: int | None = None, max_points: int | None = None
                ) -> dict[str, Series]:
        params = {"keys": keys, "since_step": since_step, "until_step": until_step,
                  "max_points": max_points}
        body = self._request("GET", f"/runs/{run_id}/metrics", params=params)
        return {k: Series.from_json(v) for k, v in body["series"].items()}

    def probes(self, run_id: int, *, since_step: int | None = None,
               every: int | None = None) -> list[EtaRecord]:
        """`every`: only steps that are multiples of it, and every non-finite record."""
        body = self._request("GET", f"/runs/{run_id}/probes",
                             params={"probe": "landscape", "since_step": since_step,
                                     "every": every})
        return [
            EtaRecord(step=r["step"], multiplier=r["multiplier"], eta=r["eta"],
                      loss=float(r["loss"]), grad_dist=float(r["grad_dist"]))
            for r in body["records"]
        ]

    def distributions(self, run_id: int, *, layer: int, scope: str = "layer",
                      since_step: int | None = None) -> list[Histogram]:
        params = {"layer": layer, "scope": scope, "since_step": since_step}
        body = self._request("GET", f"/runs/{run_id}/distributions", params=params)
        return [Histogram.from_json(r) for r in body["records"]]

    # -- seed groups --------------------------------------------------------------------------

    def groups(self, *, runs: list[int] | None = None,
               experiment_id: int | None = None) -> list[Group]:
        """The seed groups of these runs, or of an experiment's runs, in first-seen order."""
        params = {"runs": None if runs is None else ",".join(map(str, runs)),
                  "experiment_id": experiment_id}
        body = self._request("GET", "/groups", params=params)
        return [Group(key=g["key"], label=g["label"], run_ids=list(g["run_ids"]),
                      seeds=list(g["seeds"])) for g in body["groups"]]

    def grouped_metrics(self, groups: list[list[int]], keys: str, *, center: str = "median",
                        band: str = "minmax", max_points: int = 300,
                        since_step: int | None = None, until_step: int | None = None
                        ) -> list[dict[str, GroupSeries]]:
        """Per requested group, in order, its series by key: one line with a band per group,
        all on one bucket grid (GET /groups/metrics)."""
        params = {"group": [",".join(map(str, g)) for g in groups], "keys": keys,
                  "center": center, "band": band, "max_points": max_points,
                  "since_step": since_step, "until_step": until_step}
        body = self._request("GET", "/groups/metrics", params=params)
        return [{s["key"]: GroupSeries.from_json(s) for s in g["series"]}
                for g in body["groups"]]

    # -- analyses (issue 12: surfaces, trajectories, spectra) ---------------------------------

    def analyses(self, *, experiment_id: int | None = None, run_id: int | None = None,
                 group_id: int | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Analyses without their arrays, newest first as the API lists them."""
        body = self._request("GET", "/analyses", params={
            "experiment_id": experiment_id, "run_id": run_id, "group_id": group_id,
            "limit": limit})
        return body["items"] if isinstance(body, dict) else body

    def analysis(self, analysis_id: int) -> dict[str, Any]:
        """One analysis with its grids and values per step, as JSON: non-finite values stay
        strings and missing points null (webapp/figures/geometry.py reads both)."""
        return self._request("GET", f"/analyses/{analysis_id}")

    def create_analyses(self, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        """POST /analyses: {"analyses": [...], "cost": {...}}; with dry_run only the cost."""
        return self._request("POST", "/analyses", json=body, token=token)

    def cancel_analysis(self, analysis_id: int, token: str | None = None) -> dict[str, Any]:
        return self._request("POST", f"/analyses/{analysis_id}/cancel", token=token)

    def analysis_csv_url(self, analysis_id: int) -> str:
        """An analysis's grid points as CSV, as a browser link."""
        return f"{self.public_api}/analyses/{analysis_id}/csv"

    def export_url(self, run_id: int) -> str:
        """The CSV export as a browser link (same origin as the dashboard)."""
        return f"{self.public_api}/runs/{run_id}/export?format=csv"

    def docs_url(self) -> str:
        """The API's interactive documentation (FastAPI serves it beside /api/v1)."""
        root = self.public_api.rsplit("/api/", 1)[0] if "/api/" in self.public_api else ""
        return f"{root}/docs"

    # -- tags, notes and the runs listing's filters (h4-tags) -----------------------------------

    def filter_runs(self, *, status: str | None = None, norm: str | None = None,
                    model: str | None = None, dataset: str | None = None,
                    experiment_id: int | None = None, tags: Iterable[str] = (),
                    source: str | None = None, name: str | None = None,
                    limit: int = 200) -> list[dict[str, Any]]:
        """Runs, newest first, filtered by the API (in SQL): every filter given must hold,
        and every one of `tags` must be on the run."""
        params = {"status": status, "norm": norm or None, "model": model or None,
                  "dataset": dataset or None, "experiment_id": experiment_id,
                  "tag": list(tags) or None, "source": source, "name": name or None,
                  "limit": limit}
        return self._request("GET", "/runs", params=params)["items"]

    def annotate_run(self, run_id: int, *, tags: Iterable[str] | None = None,
                     note: Any = ..., token: str | None = None) -> dict:
        """Set the run's tags (the whole set; None: leave them) and/or note (None clears it;
        left out: left as it is). The run's JSON back."""
        return self._request("PATCH", f"/runs/{run_id}", json=_annotation(tags, note),
                             token=token)

    def annotate_experiment(self, experiment_id: int, *, tags: Iterable[str] | None = None,
                            note: Any = ...,
                            token: str | None = None) -> dict:
        """As annotate_run, for an experiment (its runs keep their own tags)."""
        return self._request("PATCH", f"/experiments/{experiment_id}",
                             json=_annotation(tags, note), token=token)

    def tag_run(self, run_id: int, tag: str, token: str | None = None) -> dict[str, Any]:
        from urllib.parse import quote

        return self._request("POST", f"/runs/{run_id}/tags/{quote(tag, safe='')}", token=token)

    def untag_run(self, run_id: int, tag: str, token: str | None = None) -> dict[str, Any]:
        from urllib.parse import quote

        return self._request("DELETE", f"/runs/{run_id}/tags/{quote(tag, safe='')}",
                             token=token)


def _annotation(tags: Iterable[str] | None, note: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if tags is not None:
        body["tags"] = list(tags)
    if note is not ...:  # (None means something: clear the note)
        body["note"] = note
    return body
