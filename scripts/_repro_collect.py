"""The reading half of scripts/make_reproduction_doc.py: a results directory of
scripts/reproduce_figures.py `run` (any scale) becomes one JSON-able dict, results.json, from
which the page is written (scripts/_repro_page.py) and which tests/docs/test_reproduction_doc.py
re-derives.

Every verdict and number comes from server/reproduction/ (the checks `landscope reproduce
--report` applies), over every paper in its registry; the environment comes from each run's
run.json (worker/engine/environment.py wrote it where the run trained), the machine and its
load from the launcher's own record (RESULTS/launch.json, written by `make_reproduction_doc.py
run`).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import reproduce_figures as RF

from server import reproduction as R

FORMAT = 1
LAUNCH = "launch.json"  # RESULTS/launch.json: the machine, load and command of the run
# The environment fields the page states, as environment() names them.
ENV_FIELDS = ("cpu", "isa", "mkl_cbwr", "machine", "os", "device", "dtype", "torch_threads",
              "interop_threads", "deterministic", "deterministic_warn_only",
              "float32_matmul_precision", "versions")


def retrain_check(results: dict[str, Any], out: Path) -> list:
    """The results file's check experiment (its `check`: specs and thread count, as it was
    run) retrained in this process, one directory per run under `out`, loaded as the page's
    runs are: what tests/docs/test_reproduction_doc.py and scripts/kernel_sensitivity.py
    compare with the page. Raises if a run does not succeed."""
    from server.settings import get_settings
    from server.spec import RunSpec
    from worker.engine.file_sink import FileSink
    from worker.engine.trainer import Trainer

    (threads,) = results["check"]["threads"]  # the check's runs trained with one count
    runs = []
    for raw in results["check"]["specs"]:
        spec = RunSpec.model_validate(raw)
        d = out / spec.name_hint()
        sink = FileSink(d)
        try:
            result = Trainer(spec, get_settings().data_dir, "cpu", threads).run(sink)
        finally:
            sink.close()
        if result.status != "succeeded":
            raise RuntimeError(f"the check run {spec.name_hint()} ended {result.status}")
        (d / "run.json").write_text(json.dumps({"spec": spec.model_dump(mode="json"),
                                                "status": result.status}))
        runs.append(RF.load_run(d))
    return runs


# The environment variables that pick which kernels compute the same operation (oneMKL's
# branch, ATen's vector width): a fresh retrain sets them from scratch, never inherits them.
KERNEL_VARS = ("MKL_CBWR", "ATEN_CPU_CAPABILITY")


def retrain_fresh(results_path: Path, out: Path, kernels: dict[str, str]
                  ) -> tuple[list, dict[str, Any]]:
    """retrain_check in a fresh Python process whose kernel variables are `kernels` (the rest
    of KERNEL_VARS unset): the runs, and what that process's environment() said of its
    kernels ({"mkl_cbwr", "isa"}). oneMKL reads MKL_CBWR once, when it first runs, so the
    calling process (a test's, whose torch has long run) cannot switch: this one can. Raises
    if a run fails."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARS}
    env.update(kernels)
    done = subprocess.run([sys.executable, __file__, str(results_path), str(out)], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"retraining the check failed:\n{done.stderr[-4000:]}")
    ran = json.loads(done.stdout.strip().splitlines()[-1])
    results = json.loads(results_path.read_text())
    from server.spec import RunSpec

    return [RF.load_run(out / RunSpec.model_validate(raw).name_hint())
            for raw in results["check"]["specs"]], ran


def retrain_check_fresh(results_path: Path, out: Path, branch: str) -> list:
    """retrain_fresh on oneMKL's branch `branch` (MKL_CBWR): the runs. Raises if oneMKL did
    not take the branch."""
    runs, ran = retrain_fresh(results_path, out, {"MKL_CBWR": branch})
    if ran["mkl_cbwr"] != branch:
        raise RuntimeError(f"oneMKL ran branch {ran['mkl_cbwr']!r}, not {branch!r}")
    return runs


def machine_now() -> dict[str, Any]:
    """The machine the runs train on, and its load now (before and after a run)."""
    from bench._machine import _git_head, _ram_gib, code_hash, cpu_pressure_us, loadavg
    from worker.engine.environment import cpu_model

    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)), "ram_gib": round(_ram_gib() or 0, 1),
            "load": loadavg(), "cpu_pressure_us": cpu_pressure_us(), "git_head": _git_head(),
            "engine_code_sha256": code_hash()}


def run_dirs(results: Path, key: str) -> list[Path]:
    d = results / key
    return sorted(p for p in d.iterdir() if (p / "run.json").exists()) if d.is_dir() else []


def _num(x: float) -> float | str:
    """JSON has no inf or NaN: they travel as strings, read back by `num`."""
    return x if math.isfinite(x) else repr(float(x))


def num(x: float | str) -> float:
    return float(x)


def outcome_dict(claim: R.Claim, o: R.Outcome, premise: bool) -> dict[str, Any]:
    seeds = o.seeds or ((None, o),)
    return {
        "id": claim.id, "text": claim.text, "paper": claim.paper, "statistic": claim.statistic,
        "premise": premise, "k": o.k, "n": o.n, "status": o.status, "final": o.final,
        "ours": o.ours, "mark": R.mark(o),
        "values": {k: _num(v) for k, v in o.values.items()},
        "spread": {k: [_num(s.median), _num(s.lo), _num(s.hi), s.n]
                   for k, s in o.spread.items()},
        "seeds": [{"seed": s, "ok": so.ok, "ours": so.ours,
                   "values": {k: _num(v) for k, v in so.values.items()}} for s, so in seeds],
    }


def figure_dict(res: R.FigureResult, scale: str, png: Path | None, runs: list[R.RunData]
                ) -> dict[str, Any]:
    f = res.figure
    chosen = R.select_runs(f, runs)
    name = RF.png_name(f)
    return {
        "id": f.id, "title": f.title, "model": f.model, "experiment": f.experiment,
        "data": R.EXPERIMENTS[f.experiment].data.get(scale, ""), "verdict": res.verdict,
        "beyond_paper": f.beyond_paper, "choices": list(f.choices),
        "runs": len(chosen), "seeds": sorted({r.spec.get("seed") for r in chosen},
                                             key=lambda s: (s is None, s or 0)),
        "png": name if png is not None and (png / name).exists() else None,
        "claims": [outcome_dict(c, o, c is f.premise) for c, o in res.outcomes],
    }


def _environment(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each environment field's values over the runs, with how many runs had each: one value
    when every run.json agrees, several when runs trained under different settings (a
    results directory filled on two machines, or resumed with another thread count)."""
    out: dict[str, Any] = {"runs": len(records), "without": 0, "fields": {}}
    counts: dict[str, Counter[str]] = {k: Counter() for k in ENV_FIELDS}
    for rec in records:
        env = (rec.get("info") or {}).get("environment")
        if not env:
            out["without"] += 1
            continue
        for k in ENV_FIELDS:
            counts[k][json.dumps(env.get(k), sort_keys=True)] += 1
    out["fields"] = {k: [{"value": json.loads(v), "runs": n} for v, n in c.most_common()]
                     for k, c in counts.items()}
    return out


def experiment_dict(exp: R.Experiment, scale: str, dirs: list[Path],
                    records: list[dict[str, Any]]) -> dict[str, Any]:
    plan = exp.plans[scale]
    seconds = [r.get("seconds") or 0.0 for r in records]
    return {"key": exp.key, "title": exp.title, "data": exp.data.get(scale, ""),
            "preset": plan.preset, "base": plan.base, "vary": plan.vary,
            "seeds": list(plan.seeds), "planned": len(plan.specs(device="cpu")),
            "runs": len(dirs), "statuses": dict(Counter(r["status"] for r in records)),
            "seconds": sum(seconds), "slowest": max(seconds, default=0.0),
            "dtype": sorted({r["spec"].get("dtype") for r in records})}


def collect(results: Path, scale: str, png: Path | None, only: set[str] | None = None
            ) -> dict[str, Any]:
    """Everything the page states, from the results directory: every experiment of the scale,
    or those in `only` (and the papers and figures they feed)."""
    dirs = {e.key: run_dirs(results, e.key) for e in R.experiments_for(scale)
            if only is None or e.key in only}
    runs = {k: [RF.load_run(p) for p in ds] for k, ds in dirs.items()}
    records = {k: [json.loads((p / "run.json").read_text()) for p in ds]
               for k, ds in dirs.items()}
    by_figure = {res.figure.id: res for res in R.evaluate_all(scale, runs)}
    papers = []
    for paper in R.PAPERS:
        exps = [e for e in paper.experiments if scale in e.plans and e.key in dirs]
        if not exps:
            continue
        papers.append({
            "key": paper.key, "title": paper.title, "citation": paper.citation,
            "summary": paper.summary,
            "experiments": [experiment_dict(e, scale, dirs[e.key], records[e.key])
                            for e in exps],
            "figures": [figure_dict(by_figure[f.id], scale, png, runs[f.experiment])
                        for f in paper.figures
                        if f.id in by_figure and f.experiment in dirs]})
    launch_path = results / LAUNCH
    launch = json.loads(launch_path.read_text()) if launch_path.exists() else None
    every = [r for rs in records.values() for r in rs]
    return {"format": FORMAT, "scale": scale, "launch": launch,
            "environment": _environment(every), "papers": papers,
            "check": check_cell(scale, dirs, records, launch)}


def check_cell(scale: str, dirs: dict[str, list[Path]], records: dict[str, list[dict]],
               launch: dict[str, Any] | None) -> dict[str, Any] | None:
    """What tests/docs/test_reproduction_doc.py retrains: the first seed of the cheapest
    experiment (the engine's own cost estimate, reproduce_figures._cost) among those that
    train in float64, if any (float64 comes back to far tighter tolerances on another CPU than
    float32), with the specs as they trained (the test checks the catalogue still makes them)."""
    best = None
    for key, recs in records.items():
        if not recs or any(r["status"] != "succeeded" for r in recs):
            continue
        seed = min((r["spec"].get("seed") or 0) for r in recs)
        cell = [r for r in recs if (r["spec"].get("seed") or 0) == seed]
        f32 = any(r["spec"]["dtype"] != "float64" for r in cell)
        cost = (f32, sum(_cost(r["spec"]) for r in cell))
        if best is None or cost < best[0]:
            best = (cost, key, seed, cell)
    if best is None:
        return None
    _, key, seed, cell = best
    figures = [f.id for f in R.FIGURES if f.experiment == key]
    return {"experiment": key, "seed": seed, "figures": figures,
            "sets": (launch or {}).get("sets", {}),
            "threads": sorted({((r.get("info") or {}).get("environment") or {}).get(
                "torch_threads") for r in cell}, key=str),
            "specs": [r["spec"] for r in cell]}


def _cost(spec: dict[str, Any]) -> float:
    from server.spec import RunSpec

    return RF._cost(RunSpec.model_validate(spec))


if __name__ == "__main__":  # retrain_fresh's child: RESULTS_JSON OUT_DIR
    import torch  # noqa: F401  (environment() reads torch's kernels only once it is imported)

    from worker.engine.environment import environment

    retrain_check(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
    env = environment()
    print(json.dumps({"mkl_cbwr": env["mkl_cbwr"], "isa": env["isa"]}))
