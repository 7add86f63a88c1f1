"""What an analysis will take, estimated from its spec and its run's spec alone (no torch): the
server's limits check these numbers before an analysis is accepted, and a dry run returns them.

The unit is a pass over the evaluation set (`eval_samples` rows of the training set):
- `forward_passes`: forward-only passes: one per grid point (the loss, and the accuracy from
  the same outputs), plus the test set's share per point when asked (n_test / n_eval), the
  recalibration set's per point in `recalibrated` BN mode, the true loss at every snapshot of a
  trajectory and the two endpoints of an interpolation;
- `backward_passes`: forward and backward passes: the gradient of "gradient" directions and
  of a spectrum's gradient share;
- `hvps`: Hessian-vector products (double backward over the evaluation set): Lanczos for
  "hessian" directions and for a spectrum's top-k (at most ceil(1.2 m) for m steps), the
  Hutchinson probes and the SLQ steps x vectors of a spectrum's density;
- `forward_equivalents`: all of it in forward passes: a backward pass is 1 / FORWARD_SHARE
  forward passes (server/cost.py), an HVP about two backward passes.
Each counts every analysed step.

`memory_mb`: the larger of the activations of one evaluation batch for the grid points
evaluated at once (BATCHED_POINTS stacked parameter sets) and of a double backward, plus the
parameter-sized tensors (theta, two directions, the stacked copies), the float64 Lanczos
basis (m vectors of the parameter count: the term that grows fastest with a large model) and
the dataset held in memory.

`drivers` names, for each limited quantity, the analysis spec fields that drive it, most
responsible first: a limit's 422 points at the first of them the request set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from server.analysis_spec import AnalysisSpec
from server.cost import (
    ACTIVATION_FACTOR,
    FORWARD_SHARE,
    MB,
    Shape,
    UnknownCost,
    data_shape,
    dataset_bytes,
    tally,
)
from server.spec import RunSpec

# Grid points evaluated at once: the CPU's group (worker/engine/geometry/group_size.py GROUP).
# A GPU worker sizes its group to half its free memory (at most 64), so the estimate is made
# for the CPU's group.
BATCHED_POINTS = 8
HVP_BACKWARDS = 2  # an HVP: the gradient with its graph, then the gradient of <g, v>
LANCZOS_OVERHEAD = 1.2  # top-k by Lanczos costs at most ceil(1.2 m) HVPs for m steps


@dataclass(frozen=True)
class AnalysisCost:
    steps: int  # snapshot steps analysed
    points: int  # grid points, all steps together
    eval_samples: int
    batch_size: int
    forward_passes: float
    backward_passes: float
    hvps: int
    forward_equivalents: float
    params: int
    memory_mb: float
    drivers: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, without the drivers (they are for the server's error messages)."""
        out = asdict(self)
        out.pop("drivers")
        return out


SIZE_FIELDS = ("params", "norm_out", "other_out", "in_shape", "n_outputs", "n_train",
               "n_test", "dataset_bytes")


@dataclass(frozen=True)
class Sizes:
    """What the estimate needs of the run's model and data."""

    shape: Shape
    params: int
    norm_out: int
    other_out: int
    dataset_bytes: int


def sizes(run: RunSpec, recorded: dict[str, Any] | None = None) -> Sizes:
    """From the spec for built-in models and data; for a plug-in from what the worker
    recorded when it built the run (run.info["size"], worker/engine/model_size.py).
    UnknownCost when a plug-in run has recorded none (it has not started yet)."""
    if not (run.plugin_model or run.plugin_dataset):
        t = tally(run)
        return Sizes(data_shape(run), t.params, t.norm_out, t.other_out, dataset_bytes(run))
    r = recorded if isinstance(recorded, dict) else {}
    ok = all(type(r.get(f)) is int and r[f] >= 0 for f in SIZE_FIELDS if f != "in_shape")
    in_shape = r.get("in_shape")
    if not ok or not isinstance(in_shape, list) or not all(type(d) is int for d in in_shape):
        raise UnknownCost("the plug-in run has not recorded its model's and data's sizes yet "
                          "(a worker records them when it builds the run)")
    shape = Shape(tuple(in_shape), r["n_outputs"], r["n_train"], r["n_test"])
    return Sizes(shape, r["params"], r["norm_out"], r["other_out"], r["dataset_bytes"])


def _as_sizes(run: RunSpec, size: Sizes | None) -> Sizes:
    return size if size is not None else sizes(run)


def eval_rows(run: RunSpec, spec: AnalysisSpec, size: Sizes | None = None) -> int:
    n_train = _as_sizes(run, size).shape.n_train
    return n_train if spec.eval_samples is None else min(spec.eval_samples, n_train)


def eval_batch(run: RunSpec, spec: AnalysisSpec, size: Sizes | None = None) -> int:
    """The evaluation batch: the spec's, else the run's training batch; never above the set.
    (The engine's BatchOrder takes the whole set when the batch is None or no smaller.)"""
    size = _as_sizes(run, size)
    n = size.shape.n_train
    train = n if run.batch_size is None else min(run.batch_size, n)
    batch = spec.batch_size if spec.batch_size is not None else train
    return min(batch, eval_rows(run, spec, size))


def _lanczos_hvps(steps: int) -> int:
    return math.ceil(LANCZOS_OVERHEAD * steps)


def _per_step(run: RunSpec, spec: AnalysisSpec, snapshots: int,
              size: Sizes) -> tuple[float, float, int]:
    """(forward passes, backward passes, HVPs) of one analysed step."""
    shape = size.shape
    n_eval = eval_rows(run, spec, size)
    per_point = 1.0
    if spec.test_set:
        per_point += shape.n_test / n_eval
    if spec.bn_mode == "recalibrated":
        per_point += min(spec.recalibration_samples, shape.n_train) / n_eval
    forward = spec.grid_points() * per_point
    backward = 0.0
    hvps = 0
    s = spec.spectrum
    if spec.kind == "spectrum":
        hvps += _lanczos_hvps(s.lanczos_steps) + s.trace_probes + s.slq_steps * s.slq_vectors
        backward += 1  # the gradient, for its share in the top-k eigenspace
        return forward, backward, hvps
    kind = spec.directions.kind
    if kind == "gradient":
        backward += 1
    elif kind == "hessian":
        hvps += _lanczos_hvps(s.lanczos_steps)
    elif kind == "interpolation":
        forward += 2  # the endpoints' own losses, for the barrier
    if spec.kind == "trajectory":
        forward += snapshots  # the true loss at every snapshot
    return forward, backward, hvps


def _basis_steps(spec: AnalysisSpec) -> int:
    """Lanczos vectors kept at once (float64, full reorthogonalisation)."""
    s = spec.spectrum
    if spec.kind == "spectrum":
        return max(s.lanczos_steps, s.slq_steps)
    return s.lanczos_steps if spec.directions.kind == "hessian" else 0


def estimate_analysis(run: RunSpec, spec: AnalysisSpec, *, snapshots: int = 0,
                      recorded: dict[str, Any] | None = None) -> AnalysisCost:
    """The cost of `spec` on a run of spec `run` (spec.steps resolved: None counts as one
    step). `snapshots`: how many snapshots a trajectory projects (true losses to compute).
    `recorded`: the run's info["size"], which a plug-in run's estimate needs (sizes())."""
    t = sizes(run, recorded)
    n_steps = len(spec.steps) if spec.steps is not None else 1
    forward, backward, hvps = _per_step(run, spec, snapshots, t)
    forward, backward, hvps = forward * n_steps, backward * n_steps, hvps * n_steps
    batch = eval_batch(run, spec, t)
    per_sample = t.norm_out + t.other_out
    grid_act = 4 * batch * per_sample * BATCHED_POINTS if spec.grid_points() else 0.0
    grad_act = 4 * batch * per_sample * ACTIVATION_FACTOR * (HVP_BACKWARDS if hvps else 1)
    activations = max(grid_act, grad_act if hvps or backward else 0.0)
    state = 4 * t.params * (3 + BATCHED_POINTS)
    basis = 8 * t.params * _basis_steps(spec)
    data = t.dataset_bytes
    memory = (activations + state + basis + data) / MB
    return AnalysisCost(
        steps=n_steps,
        points=spec.grid_points() * n_steps,
        eval_samples=eval_rows(run, spec, t),
        batch_size=batch,
        forward_passes=forward,
        backward_passes=backward,
        hvps=hvps,
        forward_equivalents=forward + (backward + HVP_BACKWARDS * hvps) / FORWARD_SHARE,
        params=t.params,
        memory_mb=memory,
        drivers={
            "points": _point_drivers(spec),
            "hvps": _hvp_drivers(spec),
            "memory": _memory_drivers(spec, activations, basis, state, data),
        },
    )


def _point_drivers(spec: AnalysisSpec) -> tuple[str, ...]:
    axes = ("x.points", "y.points") if spec.y_axis() is not None else ("x.points",)
    x, y = spec.x_axis().points, (spec.y_axis().points if spec.y_axis() else 0)
    return (*(axes if x >= y else axes[::-1]), "steps")


def _hvp_drivers(spec: AnalysisSpec) -> tuple[str, ...]:
    s = spec.spectrum
    if spec.kind != "spectrum":
        return ("spectrum.lanczos_steps", "steps", "directions.kind")
    parts = [
        (s.slq_steps * s.slq_vectors, ("spectrum.slq_steps", "spectrum.slq_vectors")),
        (s.trace_probes, ("spectrum.trace_probes",)),
        (_lanczos_hvps(s.lanczos_steps), ("spectrum.lanczos_steps",)),
    ]
    ranked = sorted(parts, key=lambda p: p[0], reverse=True)
    return (*(f for _, fs in ranked for f in fs), "steps")


def _memory_drivers(spec: AnalysisSpec, activations: float, basis: float, state: float,
                    data: float) -> tuple[str, ...]:
    basis_field = ("spectrum.slq_steps" if spec.kind == "spectrum"
                   and spec.spectrum.slq_steps > spec.spectrum.lanczos_steps
                   else "spectrum.lanczos_steps")
    parts = [(activations, ("batch_size",)), (basis, (basis_field,)),
             (state + data, ("kind",))]
    ranked = sorted(parts, key=lambda p: p[0], reverse=True)
    return tuple(f for _, fs in ranked for f in fs)
