"""`landscope submit`: send an experiment to a server, as the dashboard's New experiment page
and POST /experiments do, and optionally follow it to the end.

    landscope submit [--preset NAME] [--set KEY=VALUE ...] [--vary KEY=A,B ...] [--name N]
                     [--server URL] [--token T] [--device D] [--no-analyses]
                     [--dry-run | --wait] [--poll S]

--preset, --set and --vary mean what they mean to `landscope train` (train_cmd.compose), so
the runs a server makes are the runs `train` would run here: every one is validated here
first (a bad key or value exits 2 before anything is sent), and the body says the preset's
comparison exactly (a key the preset varies but the command fixes is sent as one value).
--dry-run prints the server's estimate (POST /experiments/cost) and creates nothing.
--wait follows the runs and the experiment's analyses (a paired preset's end-of-training
surface and spectrum) with a progress bar, then prints each run's outcome; it exits 1 when a
run or an analysis failed or was cancelled (a diverged run is a result, not a failure).

Speaks HTTP only (httpx): imports no torch.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from landscope.cli.reproduce_cmd import Api, connect, list_analyses, wait
from landscope.cli.train_cmd import compose
from server.experiment_cost import duration_text
from server.presets import get_preset
from server.spec import RunSpec, SpecError, apply_overrides, build_spec, expand_vary, flatten


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="send an experiment to a server (and follow it with "
                       "--wait)")
    p.add_argument("--preset", help="a preset name (see `landscope presets`)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key for every run, e.g. steps=400 or deterministic=true")
    p.add_argument("--vary", dest="varies", action="append", default=[], metavar="KEY=A,B",
                   help="one run per value, e.g. norm=none,batch (replaces the preset's)")
    p.add_argument("--name", help="the experiment's name (default: the preset's)")
    p.add_argument("--server", help="the server (default http://127.0.0.1:<LANDSCOPE_PORT>)")
    p.add_argument("--token", help="API token (default LANDSCOPE_API_TOKEN)")
    p.add_argument("--device", help="every run's device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--no-analyses", action="store_true",
                   help="no end-of-training analyses (a paired preset has a surface and a "
                   "spectrum by default)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the server's estimate of the cost and create nothing")
    p.add_argument("--wait", action="store_true",
                   help="follow the runs and analyses to the end, with a progress bar")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between progress checks")
    p.set_defaults(handler=run)


def body_of(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """The POST /experiments body, and how many runs it makes (every one validated here)."""
    base, vary, sets = compose(args.preset, args.sets, args.varies)
    if args.device:
        from landscope.cli.worker_cmd import check_device

        sets["device"] = check_device(args.device)
        base = apply_overrides(base, {"device": sets["device"]})
        vary.pop("device", None)
    specs = [build_spec(d) for d in expand_vary(base, vary)]  # SpecError names the key
    sent = dict(vary)
    if args.preset:
        # The server varies the preset's keys unless the body fixes them: each one this
        # command no longer varies (fixed by --set, dropped by --vary) goes as its one value.
        values = flatten(apply_overrides(RunSpec().model_dump(mode="json"), flatten(base)))
        for key in get_preset(args.preset).vary:
            sent.setdefault(key, [values[key]])
    body: dict[str, Any] = {"base": sets, "vary": sent}
    if args.preset:
        body["preset"] = args.preset
    if args.name:
        body["name"] = args.name
    if args.no_analyses:
        body["analyses"] = []
    return body, len(specs)


def run(args: argparse.Namespace, http=None) -> int:
    """`http`: the client to reach the server with (tests pass FastAPI's TestClient)."""
    if args.poll <= 0:
        raise SpecError("--poll", "must be a positive number of seconds")
    if args.dry_run and args.wait:
        raise SpecError("--wait", "a dry run creates nothing to wait for")
    body, n_runs = body_of(args)
    api = connect(args.server, args.token, http)
    return api.talk(lambda api: _send(api, args, body, n_runs))


def _send(api: Api, args: argparse.Namespace, body: dict[str, Any], n_runs: int) -> int:
    if args.dry_run:
        print(cost_text(api.request("POST", "/experiments/cost", json=body)))
        return 0
    made = api.request("POST", "/experiments", json=body)
    print(created_text(made, api.base))
    if len(made["runs"]) != n_runs:  # the server's expansion is this command's
        print(f"landscope: warning: the server made {len(made['runs'])} runs where "
              f"{n_runs} were planned here", file=sys.stderr)
    if not args.wait:
        return 0
    try:
        bad_runs, bad_analyses = wait(api, [made], args.poll, lambda _e: True)
    except KeyboardInterrupt:
        print(f"\nlandscope: the runs go on on the server: {api.base}/experiments/"
              f"{made['id']}", file=sys.stderr)
        raise
    detail = api.get(f"/experiments/{made['id']}")
    print(outcome_text(detail, list_analyses(api, made["id"])))
    return 1 if bad_runs or bad_analyses else 0


def created_text(made: dict[str, Any], base: str) -> str:
    lines = [f"experiment {made['id']} {made['name']!r}: {len(made['runs'])} run(s) queued"]
    lines += [f"  run {r['id']}  {r['name']}" for r in made["runs"]]
    if made.get("analyses"):
        kinds = ", ".join(a.get("kind", "?") for a in made["analyses"])
        lines.append(f"  then on each run once it succeeds: {kinds}")
    lines.append(f"dashboard: {base}/experiments/{made['id']}")
    return "\n".join(lines)


def cost_text(cost: dict[str, Any]) -> str:
    """The dry run's totals, as the New experiment page's cost box says them."""
    t = cost["total"]
    parts = [f"{t.get('runs', 0)} run(s)",
             f"training {_num(t.get('training_cost_steps'))} step units"
             f" (~{duration_text(t.get('training_seconds'))})"]
    if t.get("analyses"):
        parts.append(f"{t['analyses']} analyses (~{duration_text(t.get('analysis_seconds'))})")
    if t.get("snapshots"):
        parts.append(f"{t['snapshots']} snapshots, {_num(t.get('snapshot_bytes'))} bytes")
    total = duration_text(t.get("seconds"))
    return "cost: " + "; ".join(parts) + f"; ~{total} of device time in all"


def outcome_text(detail: dict[str, Any], analyses: list[dict[str, Any]]) -> str:
    lines = [f"experiment {detail['id']} {detail['name']!r}:"]
    for r in detail["runs"]:
        loss = r.get("last_loss")  # a float, a non-finite one's string, or None
        loss_text = "" if loss is None else f"  last loss {_g(loss)}"
        lines.append(f"  run {r['id']}  {r['name']}: {r['status']} at step {r['step']}/"
                     f"{r['total']}{loss_text}")
    for a in analyses:
        lines.append(f"  analysis {a['id']} ({a['kind']}, run {a['run_id']}): {a['status']}")
    return "\n".join(lines)


def _num(v: Any) -> str:
    return "?" if v is None else f"{v:,.0f}"


def _g(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
