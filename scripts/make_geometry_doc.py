"""docs/geometry.md: the landscape analyses explained, and measured with and without BatchNorm.

    scripts/make_geometry_doc.py                  # train, analyse, render (what the page shows)
    scripts/make_geometry_doc.py run --out F      # train + analyse only: the measurements, JSON
    scripts/make_geometry_doc.py render F         # the page and its figures from that JSON
    scripts/make_geometry_doc.py --seeds 0 --steps 100 --eval-samples 256 --doc /tmp/g.md
                                                  # a smoke run: its numbers mean nothing

`run` trains the paired quick-mlp experiment (6 x 128 MLP on mnist1d, norm none vs batch) in
this process with the engine, once per seed, saving snapshots, and runs on each run's last step
the analyses the service runs (worker/engine/geometry/job.py AnalysisJob, the same code a
worker executes): an end-of-training surface (random filter-normalised directions, one
direction seed for every run), a spectrum (BN mode batch; for the BN run also running) and a
trajectory. Everything it measured goes to docs/geometry/results.json with the machine, the
load and the versions. `render` (scripts/_geometry_page.py) derives every number of the page
from that file and draws the figures with matplotlib (installed with mnist1d; plotly's image
export needs kaleido, which is not a dependency). tests/docs/test_geometry_doc.py retrains one
cell from its stored spec and recomputes its top eigenvalue and trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # _geometry_page beside this file

from server.analysis_spec import AnalysisSpec  # noqa: E402
from server.presets import get_preset  # noqa: E402
from server.spec import RunSpec, build_spec  # noqa: E402

PRESET = "quick-mlp"
NORMS = ("none", "batch")
SEEDS = (0, 1, 2)
DIRECTION_SEED = 0  # one per experiment: every run gets the same raw directions
EVAL_SEED = 0
EVAL_SAMPLES = 2048
SNAPSHOT_EVERY = 20
# Probes measure without changing the trajectory (worker/engine/trainer.py, step 4): the page
# needs only the weights, so they are off and a run trains in seconds.
PROBES_OFF = {k: {"every": 0} for k in
              ("landscape", "ics", "activations", "sharpness", "grad_norm", "distance")}
# The spectrum and the grids use the API's defaults (server/analysis_spec.py): what a user gets.
SPECTRUM: dict[str, Any] = {}
DOC = ROOT / "docs" / "geometry.md"
FIGURES = ROOT / "docs" / "geometry"


def run_spec(seed: int, norm: str, steps: int | None = None) -> RunSpec:
    preset = get_preset(PRESET)
    base = {**preset.base, "norm": norm, "seed": seed, "device": "cpu", "probes": PROBES_OFF,
            "snapshots": {"every": SNAPSHOT_EVERY}}
    if steps is not None:
        base["steps"] = steps
    return build_spec(base)


def analysis_specs(eval_samples: int) -> dict[str, AnalysisSpec]:
    common = {"eval_samples": eval_samples, "eval_seed": EVAL_SEED,
              "directions": {"kind": "random", "seed": DIRECTION_SEED}}
    return {
        "surface": AnalysisSpec(kind="surface", **common),
        "spectrum": AnalysisSpec(kind="spectrum", spectrum=SPECTRUM, **common),
        "spectrum_running": AnalysisSpec(kind="spectrum", spectrum=SPECTRUM, bn_mode="running",
                                         **common),
        "trajectory": AnalysisSpec(kind="trajectory", eval_samples=eval_samples,
                                   eval_seed=EVAL_SEED,
                                   directions={"kind": "pca", "seed": DIRECTION_SEED}),
    }


# -- measuring ---------------------------------------------------------------------------------


def train(spec: RunSpec, run_dir: Path, data_dir: Path) -> tuple[Any, dict[str, Any]]:
    from worker.engine.sink import MemorySink
    from worker.engine.snapshots import DirectorySnapshotStore
    from worker.engine.trainer import Trainer

    store = DirectorySnapshotStore(run_dir / "snapshots")
    mem = MemorySink()
    started = time.perf_counter()
    result = Trainer(spec, data_dir, "cpu").run(mem, snapshots=store)
    if result.status != "succeeded":
        raise RuntimeError(f"{spec.name_hint()}: training ended {result.status}")
    loss, acc = mem.values("train/loss"), mem.values("test/acc")
    return store, {"seconds": round(time.perf_counter() - started, 2),
                   "train_loss": loss[-1] if loss else None,
                   "test_acc": acc[-1] if acc else None}


def analyse(spec: RunSpec, aspec: AnalysisSpec, store: Any, data_dir: Path) -> dict[str, Any]:
    """One analysis of the run's last snapshot, in-process: its values and grid (if any)."""
    from worker.engine.geometry.job import AnalysisJob
    from worker.engine.geometry.sink import MemoryAnalysisSink, jsonable

    sink = MemoryAnalysisSink()
    started = time.perf_counter()
    job = AnalysisJob(spec, aspec, data_dir, store, "cpu")
    (step,) = job.steps()
    job.run_all(sink)
    out: dict[str, Any] = {"step": step, "seconds": round(time.perf_counter() - started, 2),
                           "parameters": sum(p.numel() for p in job.net.parameters()),
                           "values": jsonable(sink.named[step])}
    if aspec.grid_points():
        nx = len(job.xs)
        rows = sink.grid[step]
        loss = [[rows[iy * nx + ix].loss for ix in range(nx)] for iy in range(len(job.ys))]
        acc = [[rows[iy * nx + ix].acc for ix in range(nx)] for iy in range(len(job.ys))]
        out["grid"] = jsonable({"x": job.xs, "y": job.ys, "loss": loss, "acc": acc})
    return out


def _slim(values: dict[str, Any]) -> dict[str, Any]:
    """The density is drawn, never quoted: 6 significant digits keep the file small."""
    s = values.get("spectrum")
    if isinstance(s, dict) and "density" in s:
        s["density"] = {k: [float(f"{v:.6g}") for v in vs] for k, vs in s["density"].items()}
    return values


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bench._machine import cpu_pressure_us, describe, loadavg

    torch.set_num_threads(args.threads)
    specs = analysis_specs(args.eval_samples)
    machine = describe(torch.device("cpu"))
    machine["load_before"] = loadavg()
    psi0, t0 = cpu_pressure_us(), time.perf_counter()
    cells = []
    with tempfile.TemporaryDirectory(prefix="geometry-doc-") as tmp:
        for seed in args.seeds:
            for norm in NORMS:
                spec = run_spec(seed, norm, args.steps)
                store, trained = train(spec, Path(tmp) / spec.name_hint(), args.data_dir)
                cell: dict[str, Any] = {"seed": seed, "norm": norm, "label": spec.name_hint(),
                                        "run_spec": spec.model_dump(mode="json"),
                                        "train": trained}
                kinds = ["surface", "spectrum", "trajectory"]
                if norm != "none":
                    kinds.insert(2, "spectrum_running")
                for kind in kinds:
                    cell[kind] = _slim(analyse(spec, specs[kind], store, args.data_dir))
                    print(f"{spec.name_hint()}: {kind} in {cell[kind]['seconds']} s",
                          file=sys.stderr, flush=True)
                cells.append(cell)
    wall = time.perf_counter() - t0
    psi1 = cpu_pressure_us()
    machine["load_after"] = loadavg()
    machine["cpu_pressure_share"] = (round((psi1 - psi0) / 1e6 / wall, 3)
                                     if psi0 is not None and psi1 is not None else None)
    dtype = cells[0]["spectrum"]["values"]["meta"]["dtype"]
    return {"format": 1, "preset": PRESET, "seeds": list(args.seeds), "norms": list(NORMS),
            "direction_seed": DIRECTION_SEED, "eval_seed": EVAL_SEED,
            "eval_samples": args.eval_samples, "snapshot_every": SNAPSHOT_EVERY,
            "dtype": dtype, "seconds": round(wall, 1), "machine": machine,
            "analysis_specs": {k: v.model_dump(mode="json") for k, v in specs.items()},
            "check": {"seed": args.seeds[0], "norm": "none"}, "cells": cells}


def dump(results: dict[str, Any]) -> str:
    """Compact JSON, one top-level key and one cell per line (readable, diffable, small)."""
    lines = []
    for key, value in results.items():
        if key == "cells":
            body = "[\n" + ",\n".join(json.dumps(c, separators=(",", ":")) for c in value) + "\n]"
        else:
            body = json.dumps(value)
        lines.append(f"{json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from server.settings import get_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", nargs="?", choices=("all", "run", "render"), default="all")
    ap.add_argument("results", nargs="?", type=Path,
                    help="render: the results JSON (default docs/geometry/results.json)")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")],
                    default=list(SEEDS))
    ap.add_argument("--steps", type=int, help="override the preset's steps (smoke runs)")
    ap.add_argument("--eval-samples", type=int, default=EVAL_SAMPLES)
    # One thread: on a shared machine (this one runs several jobs on 2 cores) torch's second
    # intra-op thread spin-waits for a core, and a Hessian-vector product of the 6 x 128 MLP on
    # 1,024 samples was measured at 1.07 s with 2 threads against 0.022 s with 1.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, help="run: where the results JSON goes")
    ap.add_argument("--doc", type=Path, default=DOC, help="the page (figures go beside it)")
    args = ap.parse_args(argv)
    args.data_dir = args.data_dir or get_settings().data_dir
    figures = args.doc.parent / args.doc.stem
    results_path = args.results or args.out or figures / "results.json"
    if args.command in ("all", "run"):
        results = measure(args)
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(dump(results))
        print(f"wrote {results_path}", file=sys.stderr)
    if args.command in ("all", "render"):
        from _geometry_page import render

        results = json.loads(results_path.read_text())
        render(results, args.doc, figures, results_path)
        print(f"wrote {args.doc} and its figures in {figures}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
