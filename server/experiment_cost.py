"""What launching an experiment costs, before it is launched (POST /experiments/cost): per
run, its training, the analyses the experiment will run on it once it succeeds
(experiment.analyses; server/services/auto_analyses.py) and the disk its snapshots take; and
the totals. Pure arithmetic over the specs (server/cost.py, server/analysis_cost.py): no torch.

Counts are exact for the engine's own models: training in training-step units (cost_steps:
steps x the probe floor plus test evaluations) and forward passes of its batch; analyses in
forward passes, backward passes and Hessian-vector products over their evaluation set.

Seconds are an order of magnitude, not a promise: floating-point work (2 x multiply-adds a
sample per forward pass; a training pass is 1 / FORWARD_SHARE forward passes) at an ASSUMED
rate per device, plus a fixed cost per pass (kernel launches, Python). The rates are round
numbers for a small CPU and one GPU of today; calibrating them on the bench's measured step
rates is future work (bench/RESULTS.md). A run whose device is "auto" is costed as on a CPU.
A plug-in model or dataset leaves everything but the counts it does not change unknown (None).
"""

from __future__ import annotations

import math
from typing import Any

from server.analysis_cost import estimate_analysis
from server.analysis_spec import AnalysisSpec
from server.cost import (
    FORWARD_SHARE,
    UnknownCost,
    estimate,
    snapshot_file_bytes,
    snapshot_steps,
    tally,
    train_batch,
)
from server.spec import RunSpec

# Assumed floating-point rate (FLOP/s) and fixed cost per pass (s), by device. The CPU's were
# set against the times server/presets.py records for the quick presets on the 2-core
# development machine: quick-resnet estimated 15.5 s training, 24 s surface, 44 s spectrum a
# run (measured 11-15, 17-19, 30-55), quick-vgg 68 s in all (54), quick-mlp 13 s (11);
# quick-dln 4 s against 16: a deep net of tiny layers is Python-bound, which FLOPs miss. The
# GPU's are a guess (an H100/H200 class GPU at a tenth of its fp32 peak) until measured.
ASSUMED_FLOPS = {"cpu": 5e10, "cuda": 5e12}
PASS_SECONDS = {"cpu": 5e-4, "cuda": 1e-4}


def device_of(spec: RunSpec) -> str:
    return "cuda" if str(spec.device).startswith("cuda") else "cpu"


def seconds(flops: float, passes: float, device: str) -> float:
    return flops / ASSUMED_FLOPS[device] + passes * PASS_SECONDS[device]


def training_cost(spec: RunSpec) -> dict[str, Any]:
    c = estimate(spec)
    out: dict[str, Any] = {"cost_steps": c.cost_steps, "steps": spec.steps,
                           "forward_equivalents": c.cost_steps / FORWARD_SHARE, "seconds": None}
    try:
        macs, batch = tally(spec).macs, train_batch(spec)
    except UnknownCost:
        return out
    flops = 2 * macs * batch * out["forward_equivalents"]
    out["seconds"] = seconds(flops, c.cost_steps, device_of(spec))
    return out


def snapshot_cost(spec: RunSpec) -> dict[str, Any]:
    n = snapshot_steps(spec)
    try:
        per_file = snapshot_file_bytes(spec)
    except UnknownCost:
        return {"count": n, "bytes_per_file": None, "bytes": None}
    return {"count": n, "bytes_per_file": per_file, "bytes": n * per_file}


def analysis_cost(run: RunSpec, spec: AnalysisSpec) -> dict[str, Any]:
    """One default analysis of one run, resolved as auto_analyses.check resolves it (steps
    None: the run's last step)."""
    steps = spec.steps if spec.steps is not None else [run.steps]
    out: dict[str, Any] = {"kind": spec.kind, "steps": steps, "forward_passes": None,
                           "backward_passes": None, "hvps": None, "forward_equivalents": None,
                           "seconds": None}
    try:
        snaps = snapshot_steps(run, max(steps))
        c = estimate_analysis(run, spec.model_copy(update={"steps": steps}), snapshots=snaps)
        macs = tally(run).macs
    except UnknownCost:
        return out
    batches = math.ceil(c.eval_samples / c.batch_size)  # passes of the evaluation set: batches
    out.update(forward_passes=c.forward_passes, backward_passes=c.backward_passes,
               hvps=c.hvps, forward_equivalents=c.forward_equivalents,
               seconds=seconds(2 * macs * c.eval_samples * c.forward_equivalents,
                               c.forward_equivalents * batches, device_of(run)))
    return out


def experiment_cost(runs: list[RunSpec], analyses: list[AnalysisSpec]) -> dict[str, Any]:
    """{"runs": [per run: name, training, analyses, snapshots, seconds], "total": {...}}."""
    per_run = []
    for spec in runs:
        train = training_cost(spec)
        done = [analysis_cost(spec, a) for a in analyses]
        parts = [train["seconds"], *(a["seconds"] for a in done)]
        per_run.append({
            "name": spec.name_hint(), "device_assumed": device_of(spec), "training": train,
            "analyses": done, "snapshots": snapshot_cost(spec),
            "seconds": None if None in parts else sum(parts),
        })
    return {"runs": per_run, "total": _total(per_run)}


def _sum(values: list[Any]) -> float | None:
    return None if any(v is None for v in values) else float(sum(values))


def _total(per_run: list[dict[str, Any]]) -> dict[str, Any]:
    done = [a for r in per_run for a in r["analyses"]]
    return {
        "runs": len(per_run),
        "training_cost_steps": _sum([r["training"]["cost_steps"] for r in per_run]),
        "training_seconds": _sum([r["training"]["seconds"] for r in per_run]),
        "analyses": len(done),
        "analysis_forward_passes": _sum([a["forward_passes"] for a in done]),
        "analysis_backward_passes": _sum([a["backward_passes"] for a in done]),
        "analysis_hvps": _sum([a["hvps"] for a in done]),
        "analysis_seconds": _sum([a["seconds"] for a in done]),
        "snapshots": sum(r["snapshots"]["count"] for r in per_run),
        "snapshot_bytes": _sum([r["snapshots"]["bytes"] for r in per_run]),
        "seconds": _sum([r["seconds"] for r in per_run]),
    }


def duration_text(seconds: float | None) -> str:
    """An estimate's seconds in words ('4.4 s', '74 s', '12 min', '2.5 h'; '?' unknown), as
    the New experiment page's cost box and `landscope submit --dry-run` say them."""
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
