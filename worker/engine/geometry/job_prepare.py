"""What an analysis needs before any grid point: its data, its networks and its directions.

The choices made here, each recorded in the analysis's "meta" and "directions" values:
- Evaluation set: eval_subset(n_train, eval_samples, eval_seed) of the run's training set
  (all of it when eval_samples is None or exceeds it), so every run of an experiment is
  measured on the same samples. The recalibration set of bn_mode "recalibrated" is a second
  seeded subset of the training set, keyed by derive_seed(eval_seed, "recalibration").
- Direction scale. Random directions are filter-normalised (directions.py). The gradient and
  Hessian eigenvectors are rescaled as a whole to ||theta|| (over every parameter), which keeps
  their direction exactly and gives alpha the same unit as a random direction's (a filter-
  normalised direction has theta's own norm, less the ignored 1-D parameters). PCA directions
  are unit vectors scaled by TRAJECTORY_MARGIN x the largest |coordinate| of the snapshots
  along them, so that the whole path lies within [-0.8, 0.8] of the default [-1, 1] axes.
- PCA and trajectory centre on the analysed step s, over the snapshots at or before it (the
  last step: the whole path, as Li et al.).
- Interpolation moves the parameters only: in bn_mode "running" every grid point reads
  theta_a's running statistics, while the endpoints are each evaluated with their own
  snapshot's (so in that mode the point at alpha = 1 and endpoint b may differ).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from server.analysis_spec import AnalysisSpec
from worker.engine.geometry.directions import orthogonalize, random_direction
from worker.engine.geometry.flat import dot, norm, unflatten
from worker.engine.geometry.hessian import network_hvp, top_eigen
from worker.engine.geometry.pca import pca_directions
from worker.engine.geometry.sink import AnalysisSink
from worker.engine.state import derive_seed

Params = dict[str, Tensor]
TRAJECTORY_MARGIN = 1.25


@dataclass
class DirectionSet:
    """The directions of one analysed step and what describes them (JSON-able `info`)."""

    directions: list[Params]
    labels: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def subset_size(samples: int | None, n: int) -> int:
    return n if samples is None else min(samples, n)


def params_of(state: Mapping[str, Tensor], names: list[str], device: torch.device) -> Params:
    """The parameters (not the buffers) of a snapshot's state_dict, in the net's order."""
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(f"the snapshot lacks parameters {missing[:5]}: another architecture?")
    return {n: state[n].to(device) for n in names}


def scaled(d: Mapping[str, Tensor], target: float) -> Params:
    """d rescaled as a whole to norm `target` (a zero d stays zero)."""
    n = norm(d)
    s = target / n if n > 0 else 0.0
    return {k: (v.double() * s).to(v.dtype) for k, v in d.items()}


def random_set(theta: Params, spec: AnalysisSpec, count: int) -> DirectionSet:
    """One or two filter-normalised Gaussians; the second orthogonalised against the first."""
    seed, keep = spec.directions.seed, spec.directions.keep_1d
    dirs = [random_direction(theta, seed, "d1", keep_1d=keep)]
    if count == 2:
        dirs.append(orthogonalize(random_direction(theta, seed, "d2", keep_1d=keep), dirs[0]))
    return DirectionSet(dirs, ["d1", "d2"][:count],
                        {"norms": [norm(d) for d in dirs], "theta_norm": norm(theta)})


def gradient_set(theta: Params, grad: Mapping[str, Tensor]) -> DirectionSet:
    g = {k: v.to(theta[k].dtype) for k, v in grad.items()}
    g_norm, t_norm = norm(g), norm(theta)
    return DirectionSet([scaled(g, t_norm)], ["gradient"],
                        {"gradient_norm": g_norm, "theta_norm": t_norm, "scale": "theta_norm"})


def hessian_set(theta: Params, loss_fn, spec: AnalysisSpec, count: int) -> DirectionSet:
    """The top `count` Hessian eigenvectors (Lanczos, spec.spectrum.lanczos_steps steps)."""
    op, n = network_hvp(loss_fn, theta)
    m = min(spec.spectrum.lanczos_steps, n)
    top = top_eigen(op, n, count, m, seed=derive_seed(spec.directions.seed, "hessian"))
    t_norm = norm(theta)
    dirs = [scaled(unflatten(v.to(op.dtype), theta), t_norm) for v in top.vectors]
    return DirectionSet(dirs, [f"eig{i + 1}" for i in range(count)],
                        {"eigenvalues": top.values, "lanczos_residuals": top.residuals,
                         "hvps": top.hvps, "theta_norm": t_norm, "scale": "theta_norm"})


@dataclass
class Plane:
    """PCA directions (scaled), and each snapshot's coordinates in their units."""

    directions: DirectionSet
    steps: list[int]
    coords: list[list[float]]


def pca_plane(theta: Params, path: list[tuple[int, Params]], count: int) -> Plane:
    """The top `count` principal directions of theta_i - theta over `path` (step, params)."""
    # On the CPU: the path may hold many networks; only the directions go to theta's device.
    device, theta = next(iter(theta.values())).device, {k: v.cpu() for k, v in theta.items()}
    others = [(s, p) for s, p in path if not all(torch.equal(p[k], theta[k]) for k in theta)]
    if len(others) < count:
        raise ValueError(
            f"pca needs at least {count} snapshots other than the analysed step "
            f"(at or before it); this run has {len(others)}: save more (snapshots.every)"
        )
    res = pca_directions([p for _, p in others], theta, k=count)
    units = [scaled(d, 1.0) for d in res.directions]  # unit whatever pca.py returns
    raw = [[dot({k: p[k] - theta[k] for k in theta}, u) for u in units] for _, p in path]
    scales = []
    for j in range(count):
        extent = max(abs(c[j]) for c in raw)
        scales.append(TRAJECTORY_MARGIN * extent if extent > 0 else 1.0)
    dirs = [{k: (v.double() * s).to(v.dtype).to(device) for k, v in u.items()}
            for u, s in zip(units, scales, strict=True)]
    info = {"explained_variance": res.explained_variance, "scales": scales,
            "scale": "trajectory", "theta_norm": norm(theta)}
    coords = [[c[j] / scales[j] for j in range(count)] for c in raw]
    return Plane(DirectionSet(dirs, [f"pc{i + 1}" for i in range(count)], info),
                 [s for s, _ in path], coords)


def interpolation_set(theta_a: Params, theta_b: Params) -> DirectionSet:
    """d = theta_b - theta_a: alpha 0 is theta_a, alpha 1 is theta_b."""
    if theta_a.keys() != theta_b.keys() or any(
            theta_a[k].shape != theta_b[k].shape for k in theta_a):
        raise ValueError("interpolation needs two networks of the same architecture")
    d = {k: theta_b[k] - theta_a[k] for k in theta_a}
    return DirectionSet([d], ["b-a"], {"distance": norm(d), "theta_norm": norm(theta_a)})


def barrier(alphas: list[float], losses: list[float], loss_a: float, loss_b: float
            ) -> float | None:
    """max L over the grid points on the segment (0 <= alpha <= 1) minus max(L_a, L_b).

    Points outside the segment (the default axis runs -0.5 .. 1.5) extrapolate beyond both
    networks and say nothing of the path between them. None when no point lies on the
    segment; NaN when a value on it is not finite (a diverged network is data).
    """
    on = [v for a, v in zip(alphas, losses, strict=True) if 0.0 <= a <= 1.0]
    if not on:
        return None
    if any(math.isnan(v) for v in [*on, loss_a, loss_b]):
        return math.nan
    return max(on) - max(loss_a, loss_b)


def meta(norm_name: str | None, spec: AnalysisSpec, *, eval_samples: int, batch_size: int,
         recal_samples: int | None, test_samples: int | None, device: torch.device,
         dtype: torch.dtype) -> dict[str, Any]:
    """How every value of this analysis was measured (shown beside each figure)."""
    d = spec.directions
    return {
        "bn_mode": spec.bn_mode, "norm": norm_name, "eval_samples": eval_samples,
        "eval_seed": spec.eval_seed, "batch_size": batch_size,
        "recalibration_samples": recal_samples, "test_samples": test_samples,
        "directions": {"kind": d.kind, "seed": d.seed, "keep_1d": d.keep_1d,
                       "source": d.source if d.kind == "interpolation" else None,
                       "other_run": d.other_run},
        "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),  # "threads": added by prepare, in the job's numerics
    }


class Recorder:
    """Passes everything to the sink and keeps the step's losses for the barrier (run_all:
    the one process that holds every point of a step)."""

    def __init__(self, sink: AnalysisSink, losses: dict[int, float]) -> None:
        self.sink, self.losses = sink, losses
        self.named: dict[str, Any] = {}

    def points(self, step: int, rows) -> None:
        self.losses.update((r.index, r.loss) for r in rows)
        self.sink.points(step, rows)

    def values(self, step: int, values) -> None:
        self.named.update(values)
        self.sink.values(step, values)


def interpolation_barrier(spec: AnalysisSpec, losses: Mapping[int, float],
                          endpoints: Mapping[str, Any]) -> float | None:
    """The barrier of an interpolation slice from its grid losses (flat index -> loss) and its
    "endpoints" value: for whoever holds every point (run_all, or the server's last chunk)."""
    xs = spec.x_axis().values()
    idx = sorted(losses)
    return barrier([xs[i] for i in idx], [losses[i] for i in idx],
                   endpoints["a"]["loss"], endpoints["b"]["loss"])
