"""`landscope analyse`: a trained run's landscape, in this process or on a server.

    landscope analyse RUN_DIR [--kind surface|slice|trajectory|spectrum] [--steps 0,500]
                      [--bn-mode batch|running|recalibrated] [--points N]
                      [--directions random|gradient|hessian|pca|interpolation]
                      [--eval-samples N|all] [--set KEY=VALUE ...] [--out DIR]
    landscope analyse --server URL (--run ID | --experiment ID) [same options] [--dry-run]
                      [--wait] [--out DIR]

In-process, RUN_DIR is a `landscope train` run folder (OUT/<run label>: run.json and the
snapshots/ that training saved); the results go to OUT (default RUN_DIR/analyses/<kind>-
<bn mode>-<time>/): analysis.json (spec, meta, directions, spectrum/trajectory/endpoints/
barrier values per step) and points.csv (one row per grid point). Against a server the same
spec is POSTed to /api/v1/analyses and the analysis runs on its workers (--wait follows it;
--out then saves its detail and CSV). Usage errors exit 2 with a message naming the option.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from server.analysis_spec import BN_MODES, DIRECTIONS_FOR, KINDS, AnalysisSpec
from server.settings import get_settings
from server.spec import RunSpec, SpecError, parse_value

DIRECTION_KINDS = ("random", "gradient", "hessian", "pca", "interpolation")
TERMINAL = ("succeeded", "failed", "cancelled")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyse", help="a trained run's loss surface, slice, trajectory or "
                                       "Hessian spectrum (in-process, or on a server)")
    p.add_argument("run_dir", nargs="?", type=Path,
                   help="a `landscope train` run folder (OUT/<run label>)")
    p.add_argument("--kind", choices=KINDS, default="surface")
    p.add_argument("--steps", help="snapshot steps, e.g. 0,500 (default: the last one saved)")
    p.add_argument("--bn-mode", choices=BN_MODES, help="BatchNorm mode (default batch)")
    p.add_argument("--points", type=int, help="grid points per axis")
    p.add_argument("--directions", choices=DIRECTION_KINDS,
                   help="direction kind (default: random; pca for a trajectory)")
    p.add_argument("--seed", type=int, help="direction seed (one per experiment)")
    p.add_argument("--eval-samples", help="evaluation subset of the training set: N or all")
    p.add_argument("--test-set", action="store_true", help="also evaluate on the test set")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any analysis-spec key, e.g. spectrum.top_k=3 or x.lo=-2")
    p.add_argument("--other", type=Path,
                   help="interpolation between runs: the other run's folder (in-process)")
    p.add_argument("--out", type=Path, help="output folder")
    p.add_argument("--data-dir", type=Path, help="datasets directory (default LANDSCOPE_DATA_DIR)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: the run's device)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--server", help="submit to this Landscope server instead (http://...)")
    p.add_argument("--run", dest="run_id", type=int, help="with --server: the run's id")
    p.add_argument("--experiment", type=int, help="with --server: every run of an experiment")
    p.add_argument("--token", help="with --server: API token (default LANDSCOPE_API_TOKEN)")
    p.add_argument("--dry-run", action="store_true", help="with --server: the cost only")
    p.add_argument("--wait", action="store_true", help="with --server: follow to the end")
    p.set_defaults(handler=run)


# -- the spec --------------------------------------------------------------------------------

def build_analysis_spec(args: argparse.Namespace) -> AnalysisSpec:
    """The AnalysisSpec the options say; a bad value raises SpecError naming the option."""
    from pydantic import ValidationError

    kind = args.kind
    directions: dict[str, Any] = {"kind": args.directions or DIRECTIONS_FOR[kind][0]}
    if args.seed is not None:
        directions["seed"] = args.seed
    data: dict[str, Any] = {"kind": kind, "directions": directions}
    if args.steps:
        try:
            data["steps"] = [int(s) for s in args.steps.split(",") if s.strip()]
        except ValueError:
            raise SpecError("--steps", f"expected steps like 0,500, got {args.steps!r}") from None
    if args.bn_mode:
        data["bn_mode"] = args.bn_mode
    if args.points is not None:
        lo, hi = (-0.5, 1.5) if directions["kind"] == "interpolation" else (-1.0, 1.0)
        data["x"] = {"lo": lo, "hi": hi, "points": args.points}
        if kind in ("surface", "trajectory"):
            data["y"] = {"points": args.points}
    if args.eval_samples is not None:
        text = args.eval_samples.strip().lower()
        if text != "all" and not (text.isascii() and text.isdigit()):
            raise SpecError("--eval-samples", f"expected a number or 'all', got {text!r}")
        data["eval_samples"] = None if text == "all" else int(text)
    if args.test_set:
        data["test_set"] = True
    if args.other is not None:
        directions.setdefault("other_run", 1)  # a folder has no run id; --other names it
        directions["source"] = "run"
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError("--set", f"expected KEY=VALUE, got {item!r}")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(key, f"{part} is a value, not a section")
        node[parts[-1]] = parse_value(value)
    try:
        return AnalysisSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"])
        raise SpecError(path or "the analysis", err["msg"].removeprefix("Value error, ")) from None


def run(args: argparse.Namespace, http=None) -> int:
    """`http`: the client to reach --server with (tests pass FastAPI's TestClient)."""
    spec = build_analysis_spec(args)
    if args.server:
        if args.run_dir is not None:
            raise SpecError("RUN_DIR", "runs here; --server submits to a server: give one")
        return _on_server(args, spec, http)
    for flag, given in (("--run", args.run_id), ("--experiment", args.experiment),
                        ("--dry-run", args.dry_run), ("--wait", args.wait)):
        if given:
            raise SpecError(flag, "needs --server URL")
    if args.run_dir is None:
        raise SpecError("RUN_DIR", "give a `landscope train` run folder (or --server URL)")
    if args.other is not None and spec.directions.kind != "interpolation":
        raise SpecError("--other", "only interpolation (--directions interpolation) uses it")
    return _in_process(args, spec)


# -- in-process ------------------------------------------------------------------------------

def load_run(run_dir: Path) -> tuple[RunSpec, Any]:
    """The run's spec (run.json, else its newest snapshot's) and its snapshot store."""
    from worker.engine.snapshots import DirectorySnapshotStore

    if not run_dir.is_dir():
        raise SpecError("RUN_DIR", f"{run_dir} is not a folder")
    store = DirectorySnapshotStore(run_dir / "snapshots")
    steps = store.steps()
    record = run_dir / "run.json"
    if record.exists():
        spec = RunSpec.model_validate(json.loads(record.read_text())["spec"])
    elif steps:
        spec = RunSpec.model_validate_json(store.load(steps[-1])["spec"])
    else:
        raise SpecError("RUN_DIR", f"{run_dir} holds no run.json and no snapshots: is it a "
                                   "`landscope train` run folder (OUT/<run label>)?")
    if not steps:
        raise SpecError("RUN_DIR", f"{run_dir}/snapshots holds no snapshots: train the run "
                                   "again without --no-snapshots")
    return spec, store


def _in_process(args: argparse.Namespace, spec: AnalysisSpec) -> int:
    from tqdm import tqdm

    from worker.engine.data import DataError
    from worker.engine.geometry.job import AnalysisJob
    from worker.engine.geometry.sink import FileAnalysisSink

    run_spec, store = load_run(args.run_dir)
    other_store = load_run(args.other)[1] if args.other is not None else None
    data_dir = args.data_dir or get_settings().data_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or args.run_dir / "analyses" / f"{spec.kind}-{spec.bn_mode}-{stamp}"
    try:
        # Threads as for training: the run's, else LANDSCOPE_TORCH_THREADS, else 1 (threads.py)
        job = AnalysisJob(run_spec, spec, data_dir, store, args.device, other_store,
                          threads=get_settings().torch_threads)
        steps = job.steps()
    except DataError as exc:
        print(f"landscope: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError) as exc:  # a missing step, a device not here
        print(f"landscope: error: {exc}", file=sys.stderr)
        return 2
    header = {"spec": spec.model_dump(mode="json"),
              "run": {"dir": str(args.run_dir), "spec": run_spec.model_dump(mode="json"),
                      "other_dir": str(args.other) if args.other else None},
              "analysed_steps": steps}
    has_grid = spec.grid_points() > 0
    sink = FileAnalysisSink(out, header, job.xs if has_grid else [],
                            job.ys if has_grid else None)
    total = len(steps) * (spec.grid_points() + 1)
    print(f"landscope: {spec.kind} of {args.run_dir} at step(s) {steps} ({spec.bn_mode} BN, "
          f"{job.meta['eval_samples']} samples) -> {out}", file=sys.stderr)
    bar = tqdm(total=total, desc=spec.kind, unit="pt", disable=args.quiet, dynamic_ncols=True,
               file=sys.stderr)

    def progress(done: int, _total: int) -> None:
        bar.n = done
        bar.update(0)

    try:
        job.run_all(sink, progress=progress)
    except ValueError as exc:  # e.g. pca with too few snapshots
        print(f"landscope: error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
        sink.flush()
    _summary(sink, steps)
    return 0


def _summary(sink, steps: list[int]) -> None:
    for step in steps:
        values = sink.named.get(step, {})
        parts = [f"step {step}:"]
        losses = [v for v in sink.losses(step) if v == v]
        if losses:
            parts.append(f"loss {min(losses):.4g} .. {max(losses):.4g}")
        if "spectrum" in values:
            s = values["spectrum"]
            top = ", ".join(f"{v:.4g}" for v in s["top_eigenvalues"])
            parts.append(f"top eigenvalues [{top}], trace {s['trace']:.4g}")
        if "barrier" in values and values["barrier"] is not None:
            parts.append(f"barrier {values['barrier']:.4g}")
        if "trajectory" in values:
            ev = ", ".join(f"{v:.3f}" for v in values["trajectory"]["explained_variance"])
            parts.append(f"explained variance [{ev}]")
        print(" ".join(parts))
    print(f"wrote {sink.dir / 'analysis.json'} and {sink.dir / 'points.csv'}")


# -- against a server ------------------------------------------------------------------------

def _on_server(args: argparse.Namespace, spec: AnalysisSpec, http=None) -> int:
    from landscope.cli.reproduce_cmd import connect

    if (args.run_id is None) == (args.experiment is None):
        raise SpecError("--run", "with --server give --run ID or --experiment ID")
    if args.other is not None:
        raise SpecError("--other", "is for a run folder; on a server set "
                                   "--set directions.other_run=ID")
    api = connect(args.server, args.token, http)
    body: dict[str, Any] = {"spec": spec.model_dump(mode="json"), "dry_run": args.dry_run}
    body["run_id" if args.run_id is not None else "experiment_id"] = \
        args.run_id if args.run_id is not None else args.experiment
    return api.talk(lambda api: _submit(api, args, body))


def _submit(api, args: argparse.Namespace, body: dict[str, Any]) -> int:
    created = api.request("POST", "/analyses", json=body)
    print(f"cost: {json.dumps(created.get('cost'))}")
    ids = [a["id"] for a in created["analyses"]]
    if args.dry_run:
        return 0
    print(f"analyses {ids} queued on {api.base}")
    if not args.wait:
        return 0
    details = [_follow(api, i, args.quiet) for i in ids]
    if args.out is not None:
        save_details(api, details, args.out)
    failed = [d["id"] for d in details if d["status"] != "succeeded"]
    if failed:
        print(f"landscope: analyses {failed} did not succeed", file=sys.stderr)
        return 1
    return 0


def save_details(api, details: list[dict], out: Path) -> None:
    """Each analysis's detail (grids and values) as analysis-ID.json, its grid as .csv."""
    from landscope.cli.reproduce_cmd import API_PREFIX, ServerError

    out.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Bearer {api.token}"} if api.token else {}
    for d in details:
        (out / f"analysis-{d['id']}.json").write_text(json.dumps(d, indent=2))
        r = api.http.get(f"{API_PREFIX}/analyses/{d['id']}/csv", headers=headers)
        if r.status_code >= 400:
            raise ServerError(f"GET /analyses/{d['id']}/csv: {r.status_code} {r.text[:300]}")
        (out / f"analysis-{d['id']}.csv").write_text(r.text)


def _follow(api, analysis_id: int, quiet: bool, poll: float = 1.0) -> dict:
    from tqdm import tqdm

    bar = tqdm(desc=f"analysis {analysis_id}", unit="pt", disable=quiet, file=sys.stderr)
    try:
        while True:
            d = api.get(f"/analyses/{analysis_id}")
            bar.total, bar.n = d["progress"]["total"], d["progress"]["done"]
            bar.update(0)
            if d["status"] in TERMINAL:
                return d
            time.sleep(poll)  # a person is watching: one request a second is plenty
    finally:
        bar.close()
