"""The measuring half of scripts/make_geometry_doc.py: train each cell, analyse its last step,
record everything that changes a result, and keep the check cell's analysed snapshot.

Runs in this process with the engine (worker/engine/trainer.py, then
worker/engine/geometry/job.py AnalysisJob: the code a worker executes). The check cell's last
snapshot (the network its numbers were measured on) is copied beside results.json with its
sha256, so that tests/docs/test_geometry_doc.py can recompute that cell's spectrum on any
machine: retraining it cannot give the same weights on another CPU (float32 sums in another
order, and the run without BatchNorm at LR 0.5 is chaotic), measuring fixed weights can.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from server.analysis_spec import AnalysisSpec
from server.spec import RunSpec

VERSIONS = ("torch", "numpy", "scikit-learn", "mnist1d", "matplotlib", "pydantic")


def train(spec: RunSpec, run_dir: Path, data_dir: Path) -> tuple[Any, dict[str, Any]]:
    import torch

    from worker.engine.sink import MemorySink
    from worker.engine.snapshots import DirectorySnapshotStore
    from worker.engine.trainer import Trainer

    store = DirectorySnapshotStore(run_dir / "snapshots")
    mem = MemorySink()
    started, cpu = time.perf_counter(), time.process_time()
    # The thread count --threads set for this process (the page records it), not the default.
    result = Trainer(spec, data_dir, "cpu", torch.get_num_threads()).run(mem, snapshots=store)
    if result.status != "succeeded":
        raise RuntimeError(f"{spec.name_hint()}: training ended {result.status}")
    loss, acc = mem.values("train/loss"), mem.values("test/acc")
    return store, {"seconds": round(time.perf_counter() - started, 2),
                   "cpu_seconds": round(time.process_time() - cpu, 2),
                   "train_loss": loss[-1] if loss else None,
                   "test_acc": acc[-1] if acc else None}


def analyse(spec: RunSpec, aspec: AnalysisSpec, store: Any, data_dir: Path) -> dict[str, Any]:
    """One analysis of the run's last snapshot, in-process: its values and grid (if any)."""
    import torch

    from worker.engine.geometry.job import AnalysisJob
    from worker.engine.geometry.sink import MemoryAnalysisSink, jsonable

    sink = MemoryAnalysisSink()
    started, cpu = time.perf_counter(), time.process_time()
    # the process's thread count, which measure() set from --threads
    job = AnalysisJob(spec, aspec, data_dir, store, "cpu", threads=torch.get_num_threads())
    (step,) = job.steps()
    job.run_all(sink)
    out: dict[str, Any] = {"step": step, "seconds": round(time.perf_counter() - started, 2),
                           "cpu_seconds": round(time.process_time() - cpu, 2),
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


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def data_sha256(spec: RunSpec, data_dir: Path) -> str:
    """A fingerprint of the dataset's tensors as loaded (mnist1d is generated with numpy, whose
    vectorised maths may differ by an ulp between CPUs: this says whether it did)."""
    d = _dataset(spec, data_dir)
    h = hashlib.sha256()
    for t in (d.x_train, d.y_train, d.x_test, d.y_test):
        if t is not None:
            h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _dataset(spec: RunSpec, data_dir: Path) -> Any:
    from worker.engine.data import load_dataset

    return load_dataset(spec, data_dir)


def environment() -> dict[str, Any]:
    """What changes a number besides the spec and the seeds: the CPU's instruction set torch
    dispatches to, threads, determinism switches, the libraries' versions."""
    import torch

    versions = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "device": "cpu", "dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "mkl": torch.backends.mkl.is_available(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "os": platform.platform(), "versions": versions,
        "seeds": "each run's spec.seed (model init, data order); direction_seed for every "
                 "random vector of an analysis; eval_seed for the evaluation subset",
    }


def keep_check_snapshot(store: Any, step: int, dest: Path, root: Path) -> dict[str, Any]:
    """Copy the analysed snapshot of the check cell to dest (a folder of its own, so that a
    DirectorySnapshotStore on it holds that step only); its path relative to root."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    src = store.path(step)
    shutil.copyfile(src, dest / src.name)
    return {"step": step, "snapshots": str(dest.relative_to(root)),
            "file": str((dest / src.name).relative_to(root)),
            "sha256": sha256(dest / src.name), "bytes": (dest / src.name).stat().st_size}


def measure_experiment(preset: str, args: Any, conf: Any, check: dict[str, Any] | None,
                       results_dir: Path, tmp: Path) -> dict[str, Any]:
    """Train and analyse every (seed, norm) cell of one paired preset."""
    specs = conf.analysis_specs(preset, args.eval_samples)
    cells, started, cpu = [], time.perf_counter(), time.process_time()
    for seed in args.seeds:
        for norm in conf.NORMS:
            spec = conf.run_spec(preset, seed, norm, args.steps)
            store, trained = train(spec, tmp / preset / spec.name_hint(), args.data_dir)
            cell: dict[str, Any] = {"seed": seed, "norm": norm, "label": spec.name_hint(),
                                    "run_spec": spec.model_dump(mode="json"),
                                    "train": trained}
            kinds = ["surface", "spectrum", "trajectory"]
            if norm != "none":
                kinds.insert(2, "spectrum_running")
            for kind in kinds:
                cell[kind] = _slim(analyse(spec, specs[kind], store, args.data_dir))
                print(f"{preset} {spec.name_hint()}: {kind} in {cell[kind]['seconds']} s "
                      f"({cell[kind]['cpu_seconds']} s CPU)",
                      file=sys.stderr, flush=True)
            if check is not None and (preset, seed, norm) == (
                    check["preset"], check["seed"], check["norm"]):
                check.update(keep_check_snapshot(store, cell["spectrum"]["step"],
                                                 results_dir / "check", results_dir))
            cells.append(cell)
    first = cells[0]["spectrum"]["values"]["meta"]
    return {"preset": preset, "analyses": conf.EXPERIMENTS[preset]["analyses"],
            "seeds": list(args.seeds), "norms": list(conf.NORMS),
            "direction_seed": conf.DIRECTION_SEED, "eval_seed": conf.EVAL_SEED,
            "eval_samples": first["eval_samples"], "snapshot_every": conf.SNAPSHOT_EVERY,
            "dtype": first["dtype"], "data_sha256": data_sha256(spec, args.data_dir),
            "classes": _dataset(spec, args.data_dir).n_outputs,
            "seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
            "analysis_specs": {k: v.model_dump(mode="json") for k, v in specs.items()},
            "cells": cells}


def measure(args: Any, conf: Any, results_dir: Path) -> dict[str, Any]:
    import torch

    from bench._machine import cpu_pressure_us, describe, loadavg

    torch.set_num_threads(args.threads)
    machine = describe(torch.device("cpu"))
    machine["load_before"] = loadavg()
    psi0, t0 = cpu_pressure_us(), time.perf_counter()
    check = ({"preset": conf.CHECK_PRESET, "seed": args.seeds[0], "norm": "none"}
             if conf.CHECK_PRESET in args.presets else None)
    with tempfile.TemporaryDirectory(prefix="geometry-doc-") as tmp:
        experiments = [measure_experiment(p, args, conf, check, results_dir, Path(tmp))
                       for p in args.presets]
    wall = time.perf_counter() - t0
    psi1 = cpu_pressure_us()
    machine["load_after"] = loadavg()
    machine["cpu_pressure_share"] = (round((psi1 - psi0) / 1e6 / wall, 3)
                                     if psi0 is not None and psi1 is not None else None)
    return {"format": 2, "seconds": round(wall, 1), "machine": machine,
            "environment": environment(),
            "options": {"seeds": list(args.seeds), "presets": list(args.presets),
                        "steps": args.steps, "eval_samples": args.eval_samples,
                        "threads": args.threads},
            "check": check, "experiments": experiments}


def dump(results: dict[str, Any]) -> str:
    """Compact JSON, one key per line and one cell per line (readable, diffable, small)."""
    def one(key: str, value: Any, indent: str) -> str:
        if key == "cells":
            inner = indent + "  "
            body = ("[\n" + ",\n".join(inner + json.dumps(c, separators=(",", ":"))
                                       for c in value) + "\n" + indent + "]")
        elif key == "experiments":
            inner = indent + "  "
            body = "[\n" + ",\n".join(
                inner + "{\n" + ",\n".join(one(k, v, inner + "  ") for k, v in e.items())
                + "\n" + inner + "}" for e in value) + "\n" + indent + "]"
        else:
            body = json.dumps(value)
        return f"{indent}{json.dumps(key)}: {body}"

    return "{\n" + ",\n".join(one(k, v, "") for k, v in results.items()) + "\n}\n"
