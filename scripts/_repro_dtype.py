"""float32 against float64 on the deep linear network (DLN), for docs/reproduction.md.

`make_reproduction_doc.py --dtype-compare` trains every DLN experiment of the catalogue (every
experiment whose runs all have model "dln", whatever paper defines it) at one scale in both
precisions (spec key `dtype`), into RESULTS/dtype/<dtype>/, and judges each DLN figure on
each: the page then shows every claim's numbers and verdict side by side.

Sensitivity: the DLN's dynamics are sensitive to its start (issue 15: in float32 at 10,000
steps one ulp of one initial weight moved the l1 run's loss by 21 %). So the first seed's runs
are trained once more with the first element of the first weight moved to the next
representable value above it (torch.nextafter), into RESULTS/dtype/ulp-<run dtype>-<unit>/:
- float32 runs, one float32 ulp;
- float64 runs, the same float32 ulp (the same perturbed start: the engine initialises in
  float32 and casts, so both precisions start from bit-identical weights): the dynamics' own
  sensitivity, with float64's smaller rounding;
- float64 runs, one float64 ulp (about 5e8 times smaller): float64's own rounding scale.
Each claim's numbers are compared with the unperturbed runs of the same seed.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import reproduce_figures as RF
from _repro_collect import outcome_dict, run_dirs

from server import reproduction as R

DTYPES = ("float32", "float64")
# (run dtype, unit of the ulp): see the module's doc.
ULPS = (("float32", "float32"), ("float64", "float32"), ("float64", "float64"))


def dln_experiments(scale: str) -> list[R.Experiment]:
    return [e for e in R.experiments_for(scale)
            if all(s.model == "dln" for s in e.plans[scale].specs(device="cpu"))]


def _ns(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**kw)


def run(results: Path, scale: str, sets: list[str], jobs: int, threads: int | None,
        data_dir: Path) -> None:
    """Train the DLN experiments in both dtypes, then the first seed's perturbed runs."""
    keys = [e.key for e in dln_experiments(scale)]
    if not keys:
        return
    for dtype in DTYPES:
        # A run the catalogue already trained in this dtype (the DLN presets are float64) is
        # copied, not retrained: same spec, same numbers (the engine is deterministic).
        wanted = RF.planned(scale, set(keys), {**dict(_parse(sets)), "dtype": dtype})
        for key, label, spec, _analyses in wanted:  # the DLN plans name no analyses
            src, dst = results / key / label, results / "dtype" / dtype / key / label
            if (src / "run.json").exists() and not (dst / "run.json").exists() and \
                    json.loads((src / "run.json").read_text())["spec"] == \
                    spec.model_dump(mode="json"):
                shutil.copytree(src, dst, dirs_exist_ok=True)
        RF.run(_ns(scale=scale, out=results / "dtype" / dtype, only=",".join(keys),
                   sets=[*sets, f"dtype={dtype}"], jobs=jobs, threads=threads,
                   data_dir=data_dir, force=False))
    todo = []
    for dtype, unit in ULPS:
        for key in keys:
            for src in first_seed(run_dirs(results / "dtype" / dtype, key)):
                dst = results / "dtype" / f"ulp-{dtype}-{unit}" / key / src.name
                if not (dst / "run.json").exists():
                    spec = json.loads((src / "run.json").read_text())["spec"]
                    todo.append((json.dumps(spec), str(dst), unit))
    with ProcessPoolExecutor(jobs) as pool:
        futures = [pool.submit(train_perturbed, spec, dst, str(data_dir), threads, unit)
                   for spec, dst, unit in todo]
        for fut in as_completed(futures):
            rec = fut.result()
            print(f"ulp run {rec['perturbed']['unit']}: {rec['status']} in {rec['seconds']} s",
                  file=sys.stderr, flush=True)


def _parse(sets: list[str]) -> list[tuple[str, Any]]:
    from server.spec import parse_value

    return [(k, parse_value(v)) for k, _, v in (s.partition("=") for s in sets)]


def first_seed(dirs: list[Path]) -> list[Path]:
    seeds = {p: json.loads((p / "run.json").read_text())["spec"].get("seed") or 0
             for p in dirs}
    low = min(seeds.values(), default=0)
    return [p for p, s in seeds.items() if s == low]


def nudge(net: Any, unit: str) -> dict[str, Any]:
    """Move the first element of the net's first parameter to the next value above it that
    `unit` represents, in place (before training: the optimiser and the probes' views follow
    the parameter itself). Returns what changed."""
    import torch

    name, p = next(iter(net.named_parameters()))
    with torch.no_grad():
        flat = p.data.view(-1)
        old = flat[0].clone()
        w = old.to(getattr(torch, unit))
        flat[0] = torch.nextafter(w, torch.tensor(math.inf, dtype=w.dtype)).to(p.dtype)
        new = flat[0].clone()
    return {"parameter": name, "index": 0, "unit": unit, "from": old.item(),
            "to": new.item()}


def train_perturbed(spec_json: str, run_dir: str, data_dir: str, threads: int | None,
                    unit: str) -> dict[str, Any]:
    """One run (what reproduce_figures.train_one does) from a start moved by one ulp."""
    from server.settings import get_settings
    from server.spec import RunSpec
    from worker.engine.file_sink import FileSink
    from worker.engine.trainer import Trainer

    spec = RunSpec.model_validate_json(spec_json)
    fallback = threads if threads is not None else get_settings().torch_threads
    trainer = Trainer(spec, Path(data_dir), "cpu", fallback)
    moved = nudge(trainer.net, unit)
    sink = FileSink(Path(run_dir))
    started = time.perf_counter()
    try:
        result = trainer.run(sink)
    finally:
        sink.close()
    record = {"spec": spec.model_dump(mode="json"), "status": result.status,
              "next_step": result.next_step, "diverged_at": result.diverged_at,
              "info": result.info, "seconds": round(time.perf_counter() - started, 1),
              "perturbed": moved}
    (Path(run_dir) / "run.json").write_text(json.dumps(record, indent=2, default=str))
    return record


# -- reading back -----------------------------------------------------------------------------


def _figures(results: Path, scale: str, first_only: bool) -> dict[str, dict[str, Any]]:
    """Each DLN figure's result on the runs under `results` (one directory per experiment)."""
    out = {}
    for exp in dln_experiments(scale):
        dirs = run_dirs(results, exp.key)
        if first_only:
            dirs = first_seed(dirs)
        runs = [RF.load_run(p) for p in dirs]
        if not runs:
            continue
        for f in R.FIGURES:
            if f.experiment == exp.key:
                res = R.evaluate(f, runs)
                out[f.id] = {"verdict": res.verdict,
                             "claims": [outcome_dict(c, o, c is f.premise)
                                        for c, o in res.outcomes]}
    return out


def collect(results: Path, scale: str) -> dict[str, Any] | None:
    """results.json's "dtype" entry: every DLN figure in both dtypes (all seeds), and the
    first seed's figures unperturbed and perturbed by one ulp."""
    base = results / "dtype"
    if not base.is_dir():
        return None
    dirs = [p for d in DTYPES for e in dln_experiments(scale)
            for p in run_dirs(base / d, e.key)]
    recs = [json.loads((p / "run.json").read_text()) for p in dirs]
    return {
        "scale": scale,
        "experiments": [e.key for e in dln_experiments(scale)],
        "dtypes": {d: _figures(base / d, scale, False) for d in DTYPES},
        "first_seed": {d: _figures(base / d, scale, True) for d in DTYPES},
        "ulp": {f"{d}-{u}": _figures(base / f"ulp-{d}-{u}", scale, False) for d, u in ULPS},
        "seconds": {d: sum(r.get("seconds") or 0 for r in recs if r["spec"]["dtype"] == d)
                    for d in DTYPES},
    }


def rel_change(a: float, b: float) -> float:
    """|b - a| / |a|: 0 when equal (infinities included), inf when a is 0 and b is not."""
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if a == 0 or math.isinf(a) or math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(b - a) / abs(a)


def largest_change(base: dict[str, Any], other: dict[str, Any]) -> tuple[float, str | None]:
    """The largest relative change between two outcomes' numbers (their "values": medians over
    seeds, or one seed's), and which number it is."""
    worst, which = 0.0, None
    for key, a in base["values"].items():
        if key in other["values"]:
            r = rel_change(float(a), float(other["values"][key]))
            if r > worst or which is None:
                worst, which = r, key
    return worst, which
