"""bench_gpu.py's `determinism` section: does the spec's `deterministic` switch make a GPU run
come back bit for bit, and what does it cost?

The case is the one the H200 showed (bench/RESULTS.md, 2026-12-04): the preset's plain VGG-16
(no BatchNorm) at LR 0.1 trained in one run and stayed at chance in a rerun of the same seed.
Here it trains twice with torch's default kernels and twice with `deterministic: true`, same
spec and seed, probes off, each run from a fresh Trainer (the engine's own path, as a worker
runs it). Reported per pair: whether the two loss series are identical bit for bit (and the
first step where they part), each run's last loss and images/s; and the switch's cost as the
ratio of the pairs' median images/s. The runs alternate default, deterministic, default,
deterministic, so that a machine getting slower over the section hits both alike.

Then the same question for an analysis (worker/engine/geometry/job_numerics.py): a small
Hessian spectrum (top-2 Lanczos, a few Hutchinson probes and one SLQ vector, on 512 samples) of
the first default run's last snapshot, computed twice as a run with default kernels would have
it and twice as one with `deterministic: true`, alternating: top eigenvalues and trace
identical bit for bit or not, and each pair's seconds. Hessian-vector products go through
backward kernels, where a GPU's atomics add in a varying order.
"""

from __future__ import annotations

import argparse
import struct
import time
from typing import Any

import torch

from bench._engine_cases import OFF, make_spec
from bench._timing import _sync, med
from landscope.sdk.analyse import MemorySnapshots
from server.analysis_spec import AnalysisSpec
from worker.engine.geometry.job import AnalysisJob
from worker.engine.geometry.sink import MemoryAnalysisSink
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer

# Small enough to repeat four times in a GPU lease; HVPs through every layer all the same.
SPECTRUM = {"kind": "spectrum", "eval_samples": 512, "batch_size": 128,
            "spectrum": {"top_k": 2, "lanczos_steps": 8, "trace_probes": 4, "slq_steps": 4,
                         "slq_vectors": 1, "density_points": 64}}


def _bits(values: list[float]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


def _spec(base: dict[str, Any], args: argparse.Namespace, steps: int, deterministic: bool):
    return make_spec(base, OFF, args.device, steps=steps, deterministic=deterministic,
                     batch_size=base["batch_size"])


def _train(base: dict[str, Any], args: argparse.Namespace, dev: torch.device, steps: int,
           deterministic: bool, snapshots: MemorySnapshots | None = None) -> dict[str, Any]:
    spec = _spec(base, args, steps, deterministic)
    trainer = Trainer(spec, args.data_dir, dev, torch.get_num_threads())
    sink = MemorySink()
    _sync(dev)
    t0 = time.perf_counter()
    result = trainer.run(sink, snapshots=snapshots)
    _sync(dev)
    wall = time.perf_counter() - t0
    loss = sink.values("train/loss")
    return {"status": result.status, "loss": loss, "wall_s": wall,
            "images_per_s": steps * spec.batch_size / wall,
            "environment": {k: trainer.info["environment"].get(k)
                            for k in ("deterministic", "cudnn")}}


def _pair(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    la, lb = _bits(a["loss"]), _bits(b["loss"])
    parted = next((i for i, (x, y) in enumerate(zip(la, lb, strict=False)) if x != y), None)
    return {
        "identical": la == lb,
        "first_differing_step": parted,
        "loss_last": [a["loss"][-1], b["loss"][-1]],
        "loss_min": [min(a["loss"]), min(b["loss"])],
        "status": [a["status"], b["status"]],
        "images_per_s": [a["images_per_s"], b["images_per_s"]],
        "environment": a["environment"],
    }


def _spectrum(base: dict[str, Any], args: argparse.Namespace, dev: torch.device, steps: int,
              deterministic: bool, store: MemorySnapshots) -> dict[str, Any]:
    """The spectrum of the stored run's last step, in the numerics of a run with
    `deterministic` (the worker's path: AnalysisJob.run_all)."""
    job = AnalysisJob(_spec(base, args, steps, deterministic), AnalysisSpec.model_validate(
        {**SPECTRUM, "steps": [steps]}), args.data_dir, store, dev,
        threads=torch.get_num_threads())
    sink = MemoryAnalysisSink()
    _sync(dev)
    t0 = time.perf_counter()
    job.run_all(sink)
    _sync(dev)
    values = sink.named[steps]["spectrum"]
    return {"top": values["top_eigenvalues"], "trace": values["trace"],
            "seconds": time.perf_counter() - t0}


def _spectrum_pair(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"identical": _bits([*a["top"], a["trace"]]) == _bits([*b["top"], b["trace"]]),
            "top": [a["top"], b["top"]], "trace": [a["trace"], b["trace"]],
            "seconds": [a["seconds"], b["seconds"]]}


def determinism(base: dict[str, Any], steps: int, args: argparse.Namespace,
                dev: torch.device) -> dict[str, Any]:
    """`base`: the preset's no-BN VGG-16 as a spec dict (bench/_gpu_sections.vgg16_base)."""
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    store = MemorySnapshots()  # the first default run's snapshots, for the spectra
    for i in range(2):
        for det in (False, True):
            keep = store if (i, det) == (0, False) else None
            runs[det].append(_train(base, args, dev, steps, det, keep))
    default, det = _pair(*runs[False]), _pair(*runs[True])
    spectra: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for _ in range(2):
        for on in (False, True):
            spectra[on].append(_spectrum(base, args, dev, steps, on, store))
    return {
        "norm": "none", "lr": 0.1, "steps": steps, "batch_size": base["batch_size"],
        "default": default, "deterministic": det,
        "cost": med(default["images_per_s"]) / med(det["images_per_s"]),
        "spectrum": {"spec": SPECTRUM, "default": _spectrum_pair(*spectra[False]),
                     "deterministic": _spectrum_pair(*spectra[True])},
    }
