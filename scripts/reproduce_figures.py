"""The paper reproduction outside the service: train the catalogue in-process, then render
docs/reproduction/*.png and the verdict table from the results directory.

    scripts/reproduce_figures.py run --scale cpu --out results/       # trains (long)
    scripts/reproduce_figures.py render results/ --png docs/reproduction --table table.md

`run` writes what `landscope train --out` writes, one directory per catalogue experiment:
RESULTS/<experiment key>/<run label>/{run.json, scalars.csv, landscape.csv,
distributions.jsonl, analyses.json}. A spec that two experiments share (with the same
analyses) is trained once and copied (the engine is deterministic: same spec, same numbers).

`render` reads that directory back, decides every figure's verdict with
server/reproduction/ (the same checks `landscope reproduce --report` applies to results in the
database) and draws the figures with the dashboard's own figure builders (webapp/figures),
screenshotted in headless chromium.

Analyses: a plan that names analyses (Plan.analyses non-empty) has each run trained with
snapshots in a temporary folder, then analysed in the same process once it succeeds (the
engine code a worker runs), into analyses.json (scripts/_reproduce_analyses.py); `load_run`
reads them into RunData.analyses. A plan left at None (the server would run the preset's
default analyses, the dashboard's surfaces and spectra) runs none here: claims read only what
their plans name (R.needs_analyses), and these are minutes of CPU no verdict uses.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import _reproduce_analyses as A  # noqa: E402
from server import reproduction as R  # noqa: E402
from server.spec import RunSpec, parse_value  # noqa: E402

# -- run --------------------------------------------------------------------------------------


def planned(scale: str, only: set[str] | None, sets: dict[str, Any] | None = None
            ) -> list[tuple[str, str, RunSpec, str]]:
    """(experiment key, run label, spec, analyses JSON) for every run of the scale: the
    analyses are the plan's own, steps resolved against the run ("[]" for a plan without:
    see the module doc); a step the run does not snapshot stops here, before any training."""
    out = []
    for exp in R.experiments_for(scale):  # type: ignore[arg-type]
        if only and exp.key not in only:
            continue
        plan = exp.plans[scale]
        specs = plan.specs(**{"device": "cpu", **(sets or {})})
        labels = [s.name_hint() for s in specs]
        if len(set(labels)) != len(labels):
            raise SystemExit(f"{exp.key}: two runs share the label; extend name_hint")
        for label, spec in zip(labels, specs, strict=True):
            analyses = A.resolved(spec, plan.analyses or ())
            out.append((exp.key, label, spec,
                        json.dumps([a.model_dump(mode="json") for a in analyses])))
    return out


def train_one(spec_json: str, run_dir: str, data_dir: str, threads: int | None,
              analyses_json: str = "[]") -> dict[str, Any]:
    """One run with a FileSink, in a worker process (what `landscope train` does), then its
    analyses (AnalysisSpec JSON, steps resolved) on the snapshots it saved, once it succeeded.
    Threads: the spec's, else `threads` (--threads), else LANDSCOPE_TORCH_THREADS (default 1),
    the policy of every launch path (worker/engine/threads.py); run.json records what was
    used."""
    from server.analysis_spec import AnalysisSpec
    from server.settings import get_settings
    from worker.engine.file_sink import FileSink
    from worker.engine.snapshots import DirectorySnapshotStore
    from worker.engine.threads import resolve_threads
    from worker.engine.trainer import Trainer

    spec = RunSpec.model_validate_json(spec_json)
    analyses = [AnalysisSpec.model_validate(a) for a in json.loads(analyses_json)]
    run_path = Path(run_dir)
    (run_path / A.FILE).unlink(missing_ok=True)  # a retrained run's old results go
    sink = FileSink(run_path)
    started = time.perf_counter()
    fallback = threads if threads is not None else get_settings().torch_threads
    with tempfile.TemporaryDirectory(prefix="repro-snapshots-") as tmp:
        # Snapshots only when something reads them: the run's metrics are the same either way.
        store = DirectorySnapshotStore(Path(tmp)) if analyses else None
        try:
            result = Trainer(spec, Path(data_dir), "cpu", fallback).run(sink, snapshots=store)
        finally:
            sink.close()
        record = {"spec": spec.model_dump(mode="json"), "status": result.status,
                  "next_step": result.next_step, "diverged_at": result.diverged_at,
                  "info": result.info, "seconds": round(time.perf_counter() - started, 1)}
        if analyses and result.status == "succeeded":  # the server analyses succeeded runs
            began = time.perf_counter()
            done = A.run_analyses(spec, analyses, store, Path(data_dir),
                                  resolve_threads(spec.threads, fallback))
            A.write(run_path, done)
            record["analyses"] = {"seconds": round(time.perf_counter() - began, 1),
                                  "status": [d["status"] for d in done]}
    (run_path / "run.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def run(args: argparse.Namespace) -> int:
    only = set(args.only.split(",")) if args.only else None
    sets = {}
    for item in args.sets:
        key, _, value = item.partition("=")
        sets[key] = parse_value(value)
    plan = planned(args.scale, only, sets)
    first: dict[str, Path] = {}  # spec and analyses JSON -> the directory that trains it
    copies: dict[str, list[Path]] = {}
    jobs: dict[str, tuple[str, str]] = {}  # that key -> (spec JSON, analyses JSON)
    for key, label, spec, analyses in plan:
        d = args.out / key / label
        js = json.dumps([spec.model_dump_json(), analyses])
        jobs[js] = (spec.model_dump_json(), analyses)
        if not args.force and A.up_to_date(d, analyses):
            continue
        if js in first:
            copies.setdefault(js, []).append(d)
        else:
            first[js] = d
    # Longest first, so the two workers finish together.
    order = sorted(first, key=lambda js: -_cost(RunSpec.model_validate_json(jobs[js][0])))
    print(f"{len(plan)} runs of scale {args.scale}: {len(order)} to train, "
          f"{sum(map(len, copies.values()))} copies", file=sys.stderr)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(train_one, jobs[js][0], str(first[js]), str(args.data_dir),
                               args.threads, jobs[js][1]): js for js in order}
        for fut in as_completed(futures):
            js = futures[fut]
            rec = fut.result()
            print(f"{first[js].relative_to(args.out)}: {rec['status']} in {rec['seconds']} s",
                  file=sys.stderr, flush=True)
            for d in copies.get(js, []):
                shutil.rmtree(d, ignore_errors=True)
                shutil.copytree(first[js], d)
    return 0


def _cost(spec: RunSpec) -> float:
    per_step = 30.0 if spec.model == "vgg" else 1.0
    if spec.norm != "none":
        per_step *= 1.5
    return spec.steps * per_step * spec.probe_cost()["floor"]


# -- read back (scripts/_repro_read.py) and render (scripts/_repro_render.py) ------------------

# Re-exported: the other scripts and the tests read results as RF.load_run / RF.load_experiment.
from scripts._repro_read import load_experiment, load_run  # noqa: E402,F401
from scripts._repro_render import png_name, render  # noqa: E402,F401  (RF.png_name: _repro_collect)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train the catalogue's runs in-process")
    r.add_argument("--scale", choices=R.SCALES, default="cpu")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--only", help="comma-separated experiment keys")
    r.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    r.add_argument("--threads", type=int, default=None,
                   help="torch threads of a run whose spec sets none (default: "
                        "LANDSCOPE_TORCH_THREADS, else 1; 0 = every core)")
    r.add_argument("--data-dir", type=Path, default=Path.home() / ".landscope")
    r.add_argument("--force", action="store_true",
                   help="retrain runs that have a run.json (and their planned analyses)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key in every run (a smoke test: steps=100)")
    r.set_defaults(fn=run)
    g = sub.add_parser("render", help="verdicts and figures from a results directory")
    g.add_argument("results", type=Path)
    g.add_argument("--scale", choices=R.SCALES, default="cpu")
    g.add_argument("--png", type=Path, help="write one PNG per paper figure here")
    g.add_argument("--table", type=Path, help="write the verdict table as Markdown")
    g.add_argument("--figures", help="comma-separated figure ids (default: all)")
    g.add_argument("--chromium", default="/usr/bin/chromium")
    g.set_defaults(fn=render)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    import _mkl_pin

    _mkl_pin.pin()  # oneMKL's COMPATIBLE branch: the same bits on Intel and AMD
    raise SystemExit(main())
