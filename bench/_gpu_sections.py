"""The measurements of bench/bench_gpu.py, one function per section; each returns a dict of
JSON-able numbers (bench/_gpu_report.py turns them into the RESULTS.md section).

Everything runs the product's own code: `landscope train` (a subprocess, as a user runs it) on
the generated CIFAR-format archive, the engine's Trainer and landscape probe for the interleaved
ratios, and AnalysisJob (prepare, then run_chunk over the job's chunks: what a worker does) for
the surfaces.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench._engine_cases import (
    MULTIPLIERS,
    OFF,
    EngineRun,
    PlainLoop,
    bf16_times,
    make_spec,
    vmap_times,
)
from bench._timing import _sync, interleave, med, paired
from server.analysis_spec import AnalysisSpec, chunks
from server.presets import get_preset
from worker.engine.geometry.evaluate import GridEvaluator
from worker.engine.geometry.job import AnalysisJob
from worker.engine.geometry.sink import MemoryAnalysisSink

ROOT = Path(__file__).resolve().parent.parent
PRESET = "paper-vgg16"


@dataclass(frozen=True)
class Scale:
    """How big each section is. `full` is the issues' scale (for a GPU); `quick` runs the same
    code in miniature (a VGG-16 at 1/8 width on a small archive), so CI checks it on a CPU."""

    name: str
    per_batch: int  # images per archive train batch (5 of them)
    n_test: int
    steps: int  # training steps of each `landscope train` run
    overrides: dict[str, Any] = field(default_factory=dict)  # spec keys set on every VGG run
    points: int = 51  # VGG-16 surface: grid points per axis
    eval_samples: int = 2048
    mlp_points: int = 21  # bench_surface's MLP grid per axis
    reps: int = 21  # interleaved repetitions per ratio
    warmup: int = 2
    bf16_steps: int = 20  # training steps per timed bf16/fp32 segment
    probe_calls: int = 2  # landscape measure() calls per timed segment
    grid_slice: int = 64  # VGG-16 grid points per timed segment (whole groups of the job's K)
    grid_reps: int = 7  # interleaved repetitions of the VGG-16 grid paths (5 variants)
    anatomy_reps: int = 7  # ... of the training steps at two batch sizes
    det_steps: int = 200  # training steps of each run of the determinism section


FULL = Scale("full", per_batch=10_000, n_test=10_000, steps=300)
QUICK = Scale("quick", per_batch=64, n_test=64, steps=4,
              overrides={"width": 0.125, "batch_size": 16, "eval_batch_size": 64},
              points=5, eval_samples=64, mlp_points=5, reps=3, warmup=1, bf16_steps=2,
              probe_calls=1, grid_slice=8, grid_reps=2, anatomy_reps=2, det_steps=3)


def vgg16_base(scale: Scale, norm: str) -> dict[str, Any]:
    """The preset's run of this norm as a spec dict, with the scale's overrides."""
    (run,) = [s for s in get_preset(PRESET).specs() if s.norm == norm]
    base = run.model_dump(exclude={"probes", "steps", "eval_every", "device", "bf16"})
    return {**base, **scale.overrides}


# -- 1. the paper-scale code path: `landscope train` ------------------------------------------

def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    with (run_dir / "scalars.csv").open() as f:
        for row in csv.DictReader(f):
            series.setdefault(row["key"], []).append((int(row["step"]), float(row["value"])))
    return series


def _run_summary(run_dir: Path, batch_size: int) -> dict[str, Any]:
    record = json.loads((run_dir / "run.json").read_text())
    s = _scalars(run_dir)
    loss = [v for _, v in s.get("train/loss", [])]
    wall = s.get("time/wall_s", [(0, float("nan"))])[-1][1]
    steps = record["next_step"]
    probe_s = {k.removeprefix("probe_time/"): sum(v for _, v in pts)
               for k, pts in s.items() if k.startswith("probe_time/")}
    return {
        "status": record["status"], "steps": steps, "wall_s": wall,
        "images_per_s": steps * batch_size / wall if wall > 0 else None,
        "loss_first": loss[0] if loss else None, "loss_last": loss[-1] if loss else None,
        "loss_min": min(loss) if loss else None,
        "nonfinite_losses": sum(not math.isfinite(v) for v in loss),
        "test_acc_last": s["test/acc"][-1][1] if "test/acc" in s else None,
        "probe_s": probe_s, "snapshots": sorted(p.name for p in (run_dir / "snapshots").glob("*")),
        "environment": record["info"].get("environment", {}),
    }


def train(scale: Scale, args: argparse.Namespace, bf16: bool) -> dict[str, Any]:
    """`landscope train --preset paper-vgg16` for scale.steps steps (both norms, the preset's
    probes at their cadence, evaluation every steps/3), in a fresh process as a user runs it."""
    out = args.work / ("runs-bf16" if bf16 else "runs-fp32")
    sets = {"steps": scale.steps, "eval_every": max(1, scale.steps // 3), "bf16": bf16,
            **scale.overrides}
    if scale.steps < 100:  # quick: bring the preset's every-100 probes inside the run
        sets.update({f"probes.{p}.every": 2 for p in ("landscape", "ics", "activations")})
    cmd = [sys.executable, "-m", "landscope.cli", "train", "--preset", PRESET,
           "--data-dir", str(args.data_dir), "--device", args.device, "--out", str(out),
           "--quiet", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"landscope train exited {done.returncode}: {done.stderr[-1500:]}")
    batch = int(scale.overrides.get("batch_size", 128))
    runs = {d.name: _run_summary(d, batch) for d in sorted(out.iterdir()) if d.is_dir()}
    return {"command": " ".join(["landscope", *cmd[3:]]), "process_s": wall, "runs": runs,
            "out": str(out)}


# -- 2. bf16 vs fp32, interleaved --------------------------------------------------------------

def bf16_ratio(scale: Scale, args: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    """Training steps with probes off, fp32 vs bf16 autocast, timed in interleaved segments."""
    base = vgg16_base(scale, "batch")
    batch, n = base["batch_size"], scale.bf16_steps
    t = bf16_times(base, args, dev, n, scale.reps, scale.warmup)
    return {"norm": "batch", "batch_size": batch, "steps_per_segment": n, "reps": scale.reps,
            "images_per_s": {k: n * batch / med(v) for k, v in t.items()},
            "speedup": med(t["fp32"]) / med(t["bf16"]),
            "paired": paired(t["fp32"], t["bf16"], lambda a, b: a / b)}


# -- 3. the batched landscape probe vs the loop -----------------------------------------------

def probe_vmap(scale: Scale, args: argparse.Namespace, dev: torch.device,
               norm: str) -> dict[str, Any]:
    """One measure() of the K = 4 landscape probe, vmap-batched vs the loop of K passes, on
    the same step and context, interleaved; with how far apart their values are."""
    base = vgg16_base(scale, norm)
    probes = {**OFF, "landscape": {"every": 1, "multipliers": MULTIPLIERS}}
    engine = EngineRun(make_spec(base, probes, args.device, batch_size=base["batch_size"]),
                       args.data_dir, dev)
    n = scale.probe_calls
    v = vmap_times(engine, n, scale.reps, scale.warmup, dev)
    t = v.pop("t")
    return {"norm": norm, "K": len(MULTIPLIERS), "batch_size": base["batch_size"],
            "ms_per_measure": {k: 1e3 * med(x) / n for k, x in t.items()},
            "loop_over_vmap": med(t["loop"]) / med(t["vmap"]),
            "paired": paired(t["loop"], t["vmap"], lambda a, b: a / b), **v}


# -- 4. surfaces on the trained VGG-16s ---------------------------------------------------------

def _job(run_dir: Path, scale: Scale, args: argparse.Namespace) -> AnalysisJob:
    from landscope.cli.analyse_cmd import load_run

    run_spec, store = load_run(run_dir)
    spec = AnalysisSpec.model_validate({
        "kind": "surface", "x": {"lo": -1.0, "hi": 1.0, "points": scale.points},
        "y": {"lo": -1.0, "hi": 1.0, "points": scale.points},
        "eval_samples": scale.eval_samples, "bn_mode": "batch"})
    return AnalysisJob(run_spec, spec, args.data_dir, store, args.device,
                       threads=torch.get_num_threads())  # the bench's own count


def surface(run_dir: Path, scale: Scale, args: argparse.Namespace,
            dev: torch.device) -> dict[str, Any]:
    """A points x points surface of the run's last snapshot as a worker computes it: prepare
    (directions), then run_chunk over the job's chunks; each phase timed on its own."""
    t0 = time.perf_counter()
    job = _job(run_dir, scale, args)
    (step,) = job.steps()
    sink = MemoryAnalysisSink()
    _sync(dev)
    t1 = time.perf_counter()
    job.prepare(step, sink)
    _sync(dev)
    t2 = time.perf_counter()
    n = job.grid_points()
    for chunk in chunks(n, job.spec.chunk_points):
        job.run_chunk(step, chunk, sink)
    _sync(dev)
    t3 = time.perf_counter()
    losses = [g.loss for g in sink.grid[step].values()]
    finite = [v for v in losses if math.isfinite(v)]
    ev = job._require_prepared(step).evaluator
    return {"step": step, "points": n, "written": len(losses), "eval_samples": len(job.x),
            "eval_batch": job.batch_size, "vmap": ev.vmap, "group": job.group,
            "fallback": ev.fallback,
            "setup_s": t1 - t0, "prepare_s": t2 - t1, "grid_s": t3 - t2,
            "points_per_s": n / (t3 - t2), "loss_min": min(finite, default=None),
            "loss_max": max(finite, default=None), "nonfinite": len(losses) - len(finite),
            "centre_loss": sink.grid[step][n // 2].loss}


@contextlib.contextmanager
def _cudnn_autotune():
    """cuDNN's benchmark mode (time every algorithm once per shape, keep the fastest) inside."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _bf16(dev: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None


def surface_paths(run_dir: Path, scale: Scale, args: argparse.Namespace,
                  dev: torch.device) -> dict[str, Any]:
    """Batched grid evaluation (vmap, the job's K points per call: the GPU default) vs the
    per-point loop, on the same VGG-16, evaluation set and grid slices, interleaved; beside
    them, for choosing what to try next: the loop on 4x larger evaluation batches (a batch
    changes BatchNorm's statistics, so its values differ), the loop on channels-last images,
    both paths with cuDNN's autotuning
    and the loop in bf16 autocast (neither is the product's path: they change which kernels,
    or what precision)."""
    job = _job(run_dir, scale, args)
    (step,) = job.steps()
    prep = job.prepare(step, MemoryAnalysisSink())
    k = job.group
    kw = dict(bn_mode="batch", batch_size=job.batch_size, classify=True)
    loop = GridEvaluator(job.net, job.loss, job.x, job.y, use_vmap=False,
                         max_batched_points=1, **kw)
    vmap = GridEvaluator(job.net, job.loss, job.x, job.y, use_vmap=True,
                         max_batched_points=k, **kw)
    # The loop on 4x larger evaluation batches: about as fast per point if the loop is bound
    # by arithmetic, much faster if by launching kernels (what vmap's groups would fix).
    wide = GridEvaluator(job.net, job.loss, job.x, job.y, use_vmap=False, max_batched_points=1,
                         **{**kw, "batch_size": 4 * job.batch_size})
    # The loop on channels-last images (NHWC): cuDNN's tensor-core convolutions work in that
    # layout, so NCHW inputs cost a transpose per layer; the values are the same sums.
    nhwc = GridEvaluator(job.net, job.loss, job.x.contiguous(memory_format=torch.channels_last),
                         job.y, use_vmap=False, max_batched_points=1, **kw)
    variants = {"loop": (loop, None), "vmap": (vmap, None),
                f"loop, eval batch {4 * job.batch_size}": (wide, None),
                "loop, channels last": (nhwc, None),
                "loop, cudnn autotune": (loop, _cudnn_autotune), "vmap, cudnn autotune":
                (vmap, _cudnn_autotune)}
    if dev.type == "cuda":
        variants["loop, bf16 autocast"] = (loop, lambda: _bf16(dev))
    coords = [job.coords(i) for i in range(job.grid_points())]
    per = scale.grid_slice
    slices = [coords[i:i + per] for i in range(0, len(coords), per) if i + per <= len(coords)]
    dirs = prep.directions.directions
    last: dict[str, list] = {}

    def runner(name: str):
        ev, ctx = variants[name]
        done = [0]

        def run(_n: int) -> None:
            with (ctx() if ctx else None) or contextlib.nullcontext():
                last[name] = ev.evaluate(prep.theta, dirs, slices[done[0] % len(slices)])
            done[0] += 1
        return run

    t = interleave({name: (runner(name), 0) for name in variants}, scale.grid_reps,
                   scale.warmup, dev)
    # Every variant's last segment was the same slice of the grid (the same repetitions).
    rel = {name: max(abs(x.loss - y.loss) / max(abs(x.loss), 1e-30)
                     for x, y in zip(last["loop"], last[name], strict=True))
           for name in variants if name != "loop"}
    flops = point_flops(loop, prep.theta, dirs, slices[0][0])
    ms = {name: 1e3 * med(v) / per for name, v in t.items()}
    return {"points_per_segment": per, "eval_samples": len(job.x), "reps": scale.grid_reps,
            "eval_batch": job.batch_size, "group": k,
            "fallback": {"vmap": vmap.fallback},
            "ms_per_point": ms,
            # the arithmetic a point costs and the rate each path sustained: how far from the
            # device's peak the grid runs, so how much any path could still gain
            "flops_per_point": flops,
            "tflops": {name: flops / (v * 1e-3) / 1e12 for name, v in ms.items()},
            "loop_over_vmap": med(t["loop"]) / med(t["vmap"]),
            "paired": paired(t["loop"], t["vmap"], lambda x, y: x / y),
            "paired_variants": {name: paired(t["loop"], t[name], lambda x, y: x / y)
                                for name in variants if name != "loop"},
            "max_rel_diff_loss": rel}


def point_flops(ev: GridEvaluator, theta: dict, dirs: list, coords: tuple) -> float:
    """Floating-point operations of one grid point's evaluation (torch's FlopCounterMode:
    convolutions and matrix products, the arithmetic that bounds the grid)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        ev.evaluate(theta, dirs, [coords])
    return float(counter.get_total_flops())


def mlp_paths(scale: Scale, args: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    """bench/bench_surface.py's measurement (6 x 128 MLP, mnist1d, 2,048 samples) on this
    device: the per-point loop and vmap 8 each against plain forwards, and vmap / loop."""
    from bench.bench_surface import bench_norm

    # group None: the points per vmap call an analysis job would choose on this device
    ns = argparse.Namespace(points=scale.mlp_points, passes=2 if scale.name == "quick" else 3,
                            warmup=1, samples=2048, batch_size=2048, data_dir=args.data_dir,
                            group=None)
    out: dict[str, Any] = {}
    for norm in ("batch", "none"):
        r = bench_norm(norm, ns, dev)
        out[norm] = {"loop_over_vmap": 1.0 / r["vmap_over_loop"]["median"],
                     "vmap_over_loop": r["vmap_over_loop"], "surface_s": r["surface_s"],
                     "fallback": r["fallback"], "points": r["points"], "group": r["group"]}
    return {"norms": out}


def step_anatomy(scale: Scale, args: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    """Where a training step of the VGG-16 (BN, probes off) spends its time: the engine beside a
    plain hand-written loop, that loop without its per-step loss read (.item() makes the CPU
    wait for each step before it queues the next), fp32 and bf16, at batch 128 (the preset's)
    and 512, interleaved per batch size. A step bound by launching kernels costs about the
    same at 4x the batch, and bf16's faster arithmetic cannot show; a per-step read that costs
    shows as the gap between the two plain loops."""
    cuda = dev.type == "cuda"
    out: dict[str, Any] = {"reps": scale.anatomy_reps, "steps_per_segment": scale.bf16_steps}
    for batch in (128, 512):
        base = {**vgg16_base(scale, "batch"), "batch_size": batch}
        variants: dict[str, Any] = {}
        for bf16 in (False, True) if cuda else (False,):  # autocast: CUDA only
            kind = "bf16" if bf16 else "fp32"
            engine = EngineRun(make_spec(base, OFF, args.device, bf16=bf16, batch_size=batch),
                               args.data_dir, dev)
            spec, data = engine.trainer.spec, engine.trainer.data
            variants[f"engine {kind}"] = engine
            if not bf16:
                variants[f"plain {kind}"] = PlainLoop(spec, data, dev)
            variants[f"plain {kind}, no per-step read"] = PlainLoop(spec, data, dev, sync=False,
                                                                     bf16=bf16)
        n = scale.bf16_steps
        t = interleave({k: (v, n) for k, v in variants.items()}, scale.anatomy_reps,
                       scale.warmup, dev)
        out[str(batch)] = {k: {"images_per_s": n * batch / med(v), "ms_per_step":
                               1e3 * med(v) / n} for k, v in t.items()}
        del variants
    return out


def run_dirs(trained: dict[str, Any]) -> dict[str, Path]:
    """norm -> run folder of a `train` result."""
    out = Path(trained["out"])
    return {name.split("-")[1]: out / name for name in trained["runs"]}
