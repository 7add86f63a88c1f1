"""`landscope reproduce`: submit the paper's figures to a running server, wait, report.

    landscope reproduce [--quick | --scale quick|cpu|paper] [--server URL] [--token T]
                        [--only KEY,...] [--device D] [--set KEY=VALUE ...] [--no-wait]
    landscope reproduce --report [--scale S] [--out FILE.md]

Each catalogue experiment (server/reproduction/) becomes one experiment on the server,
named "repro: <figures> (<model>) [<scale>]", through the normal API and worker path, so the
results land in the database and show in the dashboard. Without --no-wait it waits with a
progress bar over runs finishing (and, for an experiment whose plan names analyses, over the
analyses the worker runs on each run once it succeeds), then prints each figure's verdict;
--report reads the newest experiments of the scale back and prints (or writes) the same table
without submitting. An experiment's succeeded analyses are read into RunData.analyses when its
plan names them (R.needs_analyses); a failed one is left out, so a claim reading it finds no
data rather than a number. A plan left at the preset's default analyses (the dashboard's) is
neither waited for nor read: no claim reads them.
At quick and cpu scale each configuration runs in three seeds (server/reproduction/plans.py
SEEDS); the table marks each claim "holds in k of n seeds" and gives the median (range) over
seeds of its numbers. `--set seed=N` runs that one seed alone.

Speaks HTTP only (httpx): imports no torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from server import reproduction as R
from server.presets import get_preset
from server.settings import get_settings
from server.spec import SpecError, parse_value

API_PREFIX = "/api/v1"
FINISHED = frozenset({"succeeded", "failed", "diverged", "cancelled"})
PENDING = frozenset({"queued", "running"})  # an analysis not finished yet
PAGE = 500  # the API's largest page


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="submit the paper's figures to a server and report")
    p.add_argument("--scale", choices=R.SCALES, help="quick: minutes on a CPU; cpu (default): "
                   "the full deep linear network and VGG at reduced scale; paper: everything "
                   "at the paper's scale (VGG-16 on CIFAR-10: a GPU and the archive)")
    p.add_argument("--quick", action="store_true", help="the same as --scale quick")
    p.add_argument("--server", "--api", dest="api",
                   help="the server (default http://127.0.0.1:<LANDSCOPE_PORT>; --api is its "
                   "older name)")
    p.add_argument("--token", help="API token for submitting (default LANDSCOPE_API_TOKEN)")
    p.add_argument("--only", metavar="KEY,...",
                   help=f"these experiments only: {', '.join(R.EXPERIMENTS)}")
    p.add_argument("--device", help="set every run's device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key in every run, e.g. steps=50 for a smoke test of "
                   "the whole path (the verdicts then say little about the paper)")
    p.add_argument("--no-wait", action="store_true", help="submit and exit")
    p.add_argument("--report", action="store_true",
                   help="submit nothing: report on the newest experiments of the scale")
    p.add_argument("--out", type=Path, help="also write the report as Markdown to this file")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between progress checks")
    p.set_defaults(handler=run)


class ServerError(Exception):
    """The server cannot be reached or refused a request; the message says what to do."""


class Api:
    """The few calls `reproduce` makes; `http` may be any httpx.Client on the server (tests
    pass FastAPI's TestClient)."""

    def __init__(self, base: str, token: str | None, http: httpx.Client | None = None) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.owned = http is None  # a client passed in belongs to the caller
        self.http = http or httpx.Client(base_url=self.base, timeout=60.0)

    def close(self) -> None:
        self.http.close()

    def talk(self, work: Callable[[Api], int]) -> int:
        """`work(self)`'s exit status; a ServerError said on stderr and exit status 1; the
        client closed afterwards unless it was the caller's."""
        try:
            return work(self)
        except ServerError as exc:
            print(f"landscope: error: {exc}", file=sys.stderr)
            return 1
        finally:
            if self.owned:
                self.close()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = self.http.request(method, API_PREFIX + path, headers=headers, **kw)
        except httpx.TransportError as exc:
            raise ServerError(
                f"cannot reach the Landscope server at {self.base} ({exc.__class__.__name__}: "
                f"{exc}); start one with `landscope up`, or pass --server URL") from None
        if r.status_code == 401:
            raise ServerError("the server wants an API token: pass --token or set "
                              "LANDSCOPE_API_TOKEN")
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail") or r.text[:500]
            except ValueError:
                detail = r.text[:500]
            raise ServerError(f"{method} {path}: {r.status_code} {refusal_text(detail)}")
        return r.json() if r.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)


def token_of(given: str | None) -> str | None:
    """--token, else LANDSCOPE_API_TOKEN, else none."""
    settings = get_settings()
    return given or (settings.api_token.get_secret_value() if settings.api_token else None)


def connect(url: str | None, token: str | None, http: httpx.Client | None = None) -> Api:
    """An Api on --server (default: this machine's LANDSCOPE_PORT) with --token (default:
    LANDSCOPE_API_TOKEN); SpecError for a URL that is not http(s)."""
    base = url or f"http://127.0.0.1:{get_settings().port}"
    if not base.startswith(("http://", "https://")):
        raise SpecError("--server", f"expected an http:// or https:// URL, got {base!r}")
    return Api(base, token_of(token), http)


def refusal_text(detail: Any) -> str:
    """A refusal's detail for a person: a 422's errors as 'base.steps: at most ...', one per
    field ("body" left out of the location), anything else as the server wrote it."""
    if not isinstance(detail, list):
        return str(detail)
    out = []
    for e in detail:
        if not isinstance(e, dict):
            out.append(str(e))
            continue
        loc = [str(p) for p in e.get("loc") or []]
        where = ".".join(loc[1:] if loc[:1] == ["body"] else loc)
        out.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "; ".join(out)


def _scale(args: argparse.Namespace) -> R.Scale:
    if args.quick and args.scale not in (None, "quick"):
        raise SpecError("--quick", f"contradicts --scale {args.scale}")
    return "quick" if args.quick else (args.scale or "cpu")


def _chosen(args: argparse.Namespace, scale: R.Scale) -> list[R.Experiment]:
    exps = R.experiments_for(scale)
    if not args.only:
        return exps
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    known = {e.key for e in exps}
    bad = [k for k in keys if k not in known]
    if bad or not keys:
        raise SpecError("--only", f"unknown experiment(s) {', '.join(bad) or '(none given)'} "
                        f"at scale {scale}; known: {', '.join(sorted(known))}")
    return [e for e in exps if e.key in keys]


def _overrides(args: argparse.Namespace, scale: R.Scale, exps: list[R.Experiment]
               ) -> dict[str, Any]:
    """--device and --set as dotted spec keys, checked against every planned run first."""
    out: dict[str, Any] = {}
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError("--set", f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    if args.device:
        from landscope.cli.worker_cmd import check_device

        out["device"] = check_device(args.device)
    for exp in exps:
        exp.plans[scale].specs(**out)  # raises SpecError naming the key
    return out


def run(args: argparse.Namespace) -> int:
    scale = _scale(args)
    exps = _chosen(args, scale)
    overrides = _overrides(args, scale, exps)
    if args.poll <= 0:
        raise SpecError("--poll", "must be a positive number of seconds")
    api = connect(args.api, args.token)
    try:
        api.get("/health")  # fails fast, with the hint, when nothing listens there
        if args.report:
            return report(api, scale, exps, args.out)
        submitted = submit(api, scale, exps, overrides)
        if args.no_wait:
            print(f"landscope: submitted {len(submitted)} experiment(s); follow them in the "
                  f"dashboard at {api.base}/ or run `landscope reproduce --report"
                  f"{' --scale ' + scale if scale != 'cpu' else ''}`", file=sys.stderr)
            return 0
        try:
            failed, failed_analyses = wait(api, submitted, args.poll)
        except KeyboardInterrupt:
            print("\nlandscope: the runs go on on the server; `landscope reproduce --report"
                  f"{' --scale ' + scale if scale != 'cpu' else ''}` reads them later",
                  file=sys.stderr)
            raise
        if failed:
            print(f"landscope: warning: {failed} run(s) failed or were cancelled; their "
                  "figures have no data (see the dashboard)", file=sys.stderr)
        if failed_analyses:
            print(f"landscope: warning: {failed_analyses} analyses failed or were cancelled; "
                  "the claims reading them have no data (see the dashboard)", file=sys.stderr)
        return report(api, scale, exps, args.out)
    except ServerError as exc:
        print(f"landscope: error: {exc}", file=sys.stderr)
        return 1
    finally:
        api.close()


def submit(api: Api, scale: R.Scale, exps: list[R.Experiment], overrides: dict[str, Any]
           ) -> list[dict[str, Any]]:
    out = []
    for exp in exps:
        body = exp.plans[scale].body(exp.name(scale))
        # An override of a varied key (the preset's or the plan's) fixes it to one value.
        varied = {*get_preset(body["preset"]).vary, *body["vary"]}
        for key, value in overrides.items():
            if key in varied:
                body["vary"][key] = [value]
            else:
                body["base"][key] = value
        made = api.request("POST", "/experiments", json=body)
        out.append(made)
        print(f"landscope: experiment {made['id']} {made['name']!r}: {len(made['runs'])} runs",
              file=sys.stderr)
    return out


def wait(api: Api, submitted: list[dict[str, Any]], poll: float,
         awaits_analyses: Callable[[dict[str, Any]], bool] | None = None) -> tuple[int, int]:
    """A progress bar over runs finishing, and over the analyses of the experiments
    `awaits_analyses` names (by default those whose plans read them, R.needs_analyses), until
    every run has finished and none of those analyses is queued or running; returns how many
    runs and how many analyses failed or were cancelled. Each succeeded run gets one analysis
    per entry of its experiment's list, made in the transaction that records the success
    (server/services/auto_analyses.py), so a run not finished yet still counts its entries as
    to come."""
    from tqdm import tqdm

    awaits = awaits_analyses or _reads_analyses
    awaited = {e["id"]: len(e.get("analyses") or []) for e in submitted if awaits(e)}
    bar = tqdm(total=sum(len(e["runs"]) for e in submitted),
               desc="runs and analyses finished" if any(awaited.values()) else "runs finished",
               unit="job", dynamic_ncols=True, file=sys.stderr)
    try:
        while True:
            runs, analyses, expected = [], [], 0
            for e in submitted:
                detail = api.get(f"/experiments/{e['id']}")
                runs += detail["runs"]
                if awaited.get(e["id"]):
                    analyses += list_analyses(api, e["id"])
                    expected += awaited[e["id"]] * sum(
                        r["status"] == "succeeded" or r["status"] not in FINISHED
                        for r in detail["runs"])
            done = [r for r in runs if r["status"] in FINISHED]
            bad = sum(r["status"] in ("failed", "cancelled") for r in done)
            pending = [a for a in analyses if a["status"] in PENDING]
            bad_analyses = sum(a["status"] in ("failed", "cancelled") for a in analyses)
            running = [r for r in runs if r["status"] == "running"]
            bar.total = len(runs) + max(expected, len(analyses))
            bar.n = len(done) + len(analyses) - len(pending)
            now = ", ".join(f"{r['name']} {r['progress']:.0%}" for r in running[:2])
            if not now and pending:
                now = f"{len(pending)} analyses to go"
            failures = [f"failed/cancelled {bad}"] if bad else []
            if bad_analyses:
                failures.append(f"analyses failed {bad_analyses}")
            bar.set_postfix_str("; ".join([*failures, now] if now else failures), refresh=False)
            bar.refresh()
            if len(done) == len(runs) and not pending:
                return bad, bad_analyses
            time.sleep(poll)
    finally:
        bar.close()


def _reads_analyses(experiment: dict[str, Any]) -> bool:
    found = R.parse_name(experiment["name"])
    return found is not None and R.needs_analyses(found[0].key, found[1])


def list_analyses(api: Api, experiment_id: int, status: str | None = None
                  ) -> list[dict[str, Any]]:
    """Every analysis of the experiment (AnalysisOut JSON), oldest first. By id: the list is
    newest first, so one made between two pages shifts the second page by one."""
    out: dict[int, dict[str, Any]] = {}
    params: dict[str, Any] = {"experiment_id": experiment_id, "limit": PAGE}
    if status is not None:
        params["status"] = status
    offset = 0
    while True:
        page = api.get("/analyses", **params, offset=offset)
        out.update((a["id"], a) for a in page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return [out[i] for i in sorted(out)]


def newest(api: Api, name: str) -> dict[str, Any] | None:
    """The newest experiment with exactly this name (the list is newest first)."""
    offset = 0
    while True:
        page = api.get("/experiments", limit=500, offset=offset)
        for e in page["items"]:
            if e["name"] == name:
                return api.get(f"/experiments/{e['id']}")
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return None


def fetch_runs(api: Api, exp: R.Experiment, detail: dict[str, Any],
               scale: R.Scale | None = None) -> list[R.RunData]:
    """The experiment's runs as the checks see them; with their succeeded analyses (oldest
    first, so RunData.analysis finds the newest) when the plan at `scale` (default: the one
    the experiment's name says) names analyses."""
    if scale is None:
        found = R.parse_name(detail["name"])
        scale = found[1] if found is not None else None
    analyses: dict[int, list[dict[str, Any]]] = {}
    if scale is not None and R.needs_analyses(exp.key, scale):
        for a in list_analyses(api, detail["id"], status="succeeded"):
            analyses.setdefault(a["run_id"], []).append(api.get(f"/analyses/{a['id']}"))
    out = []
    for run in detail["runs"]:
        if run["status"] not in ("succeeded", "diverged"):
            out.append(R.RunData(run["spec"], {}, run["status"], name=run["name"]))
            continue
        metrics = api.get(f"/runs/{run['id']}/metrics", keys=R.METRIC_KEYS,
                          max_points=1_000_000)
        probes = (api.get(f"/runs/{run['id']}/probes", probe="landscape", limit=1_000_000)
                  if R.needs_etas(exp.key) else None)
        out.append(R.run_data_from_api(run, metrics, probes, analyses.get(run["id"], ())))
    return out


def report(api: Api, scale: R.Scale, exps: list[R.Experiment], out: Path | None) -> int:
    runs: dict[str, list[R.RunData]] = {}
    for exp in exps:
        detail = newest(api, exp.name(scale))
        if detail is None:
            print(f"landscope: no experiment named {exp.name(scale)!r} on {api.base}",
                  file=sys.stderr)
            continue
        runs[exp.key] = fetch_runs(api, exp, detail, scale)
    keys = {e.key for e in exps}
    results = [r for r in R.evaluate_all(scale, runs) if r.figure.experiment in keys]
    print(R.report_text(results, scale))
    if out is not None:
        out.write_text(R.report_markdown(results, scale))
        print(f"landscope: wrote {out}", file=sys.stderr)
    return 0
