"""The Hessian's spectrum from Hessian-vector products: top-k, trace, density, gradient share.

Everything here works on an operator v -> H v over flat vectors of size n (lanczos.py), so a
test can pass a matrix and the analysis a network (`network_hvp`). Each estimate counts its
HVPs: the analysis's cost (server/analysis_cost.py) is stated in them.

- top_eigen: Lanczos with full reorthogonalisation, the k algebraically largest Ritz pairs
  (negative eigenvalues are real in a non-convex landscape; "largest magnitude" would mix
  them in). m steps cost m HVPs, residuals come free from T.
- hutchinson_trace: tr(H) = E[v^T H v] for Rademacher v (the lowest-variance choice among
  i.i.d. probes: Var = 2 sum_{i != j} H_ij^2), with its standard error.
- slq_density: stochastic Lanczos quadrature (Ubaru et al. 2017; Ghorbani et al. 2019), the
  eigenvalue density as Gaussians at the Ritz nodes weighted by the quadrature weights,
  averaged over Rademacher start vectors.
- gradient_share: ||P_k g||^2 / ||g||^2 in the top-k Ritz subspace (Gur-Ari et al. 2018).

Random vectors come from torch.Generators of their own, seeded by derive_seed(seed, purpose,
index) and drawn on the CPU, so that an analysis never touches the global RNG and gives the
same probes on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from worker.engine.geometry.lanczos import (
    LanczosResult,
    Operator,
    gauss_quadrature,
    gaussian_vector,
    lanczos,
    probe_generator,
    rademacher,
)

if TYPE_CHECKING:
    from server.analysis_spec import Spectrum

__all__ = [
    "Density", "LanczosResult", "NetworkHvp", "Operator", "TopEigen", "TraceEstimate",
    "gauss_quadrature", "gaussian_vector", "gradient_share", "hutchinson_trace", "lanczos",
    "network_hvp", "probe_generator", "rademacher", "slq_density", "spectrum", "top_eigen",
]


@dataclass
class TopEigen:
    values: list[float]  # descending (algebraically largest first)
    vectors: Tensor  # k x n, float64, orthonormal rows (Ritz vectors)
    hvps: int
    residuals: list[float]  # ||H y - theta y|| per pair, from T (no extra HVP)


def top_eigen(
    op: Operator, n: int, k: int, m: int, *, seed: int,
    dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
) -> TopEigen:
    """The k largest eigenvalues of H and their vectors, from m Lanczos steps (m HVPs)."""
    if not 1 <= k <= min(m, n):
        raise ValueError(f"top_eigen needs 1 <= k <= min(m, n), got k={k}, m={m}, n={n}")
    res = lanczos(op, n, m, seed=seed, dtype=dtype, device=device)
    theta, s = res.eigh()
    k = min(k, res.steps)  # fewer only if the HVPs went non-finite
    order = torch.arange(res.steps - 1, res.steps - 1 - k, -1)
    assert res.basis is not None
    basis = res.basis
    vectors = (s[:, order].T.to(device=basis.device, dtype=basis.dtype) @ basis).to(torch.float64)
    residuals = (s[-1, order] * res.residual_beta).abs()
    return TopEigen(values=[float(v) for v in theta[order]], vectors=vectors, hvps=res.hvps,
                    residuals=[float(r) for r in residuals])


@dataclass
class TraceEstimate:
    mean: float
    stderr: float  # standard error of the mean (NaN for one probe: no spread to measure)
    probes: int
    hvps: int


def hutchinson_trace(
    op: Operator, n: int, probes: int, *, seed: int,
    dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
) -> TraceEstimate:
    """Hutchinson's estimate of tr(H): the mean of v^T H v over Rademacher v (float64 sums)."""
    if probes < 1:
        raise ValueError("hutchinson_trace needs at least one probe")
    gen = probe_generator(seed, "hutchinson")
    samples = torch.empty(probes, dtype=torch.float64)
    for i in range(probes):
        v = rademacher(n, gen).to(device=device)
        hv = op(v.to(dtype)).detach().reshape(-1).to(torch.float64)
        samples[i] = v @ hv
    mean = float(samples.mean())
    stderr = float(samples.std(correction=1)) / math.sqrt(probes) if probes > 1 else math.nan
    return TraceEstimate(mean=mean, stderr=stderr, probes=probes, hvps=probes)


@dataclass
class Density:
    nodes: list[list[float]]  # per start vector: Ritz values (ascending)
    weights: list[list[float]]  # per start vector: quadrature weights (sum 1)
    grid: list[float]
    density: list[float]  # on grid, trapezoid integral 1
    hvps: int


def slq_density(
    op: Operator, n: int, steps: int, vectors: int, *, seed: int, broadening: float,
    points: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
) -> Density:
    """The eigenvalue density of H by stochastic Lanczos quadrature.

    Per Rademacher start vector q (unit): `steps` Lanczos steps give nodes theta_i and weights
    w_i with sum_i w_i f(theta_i) = q^T f(H) q for polynomials of degree < 2 steps, whose
    expectation is tr f(H) / n. The density is the average over vectors of
    sum_i w_i N(x; theta_i, sigma^2), sigma = broadening * (max node - min node) (broadening
    itself when every node coincides), on `points` points from min - 5 sigma to max + 5 sigma,
    scaled so that its trapezoid integral there is exactly 1. A Lanczos run that reaches an
    invariant subspace stops there: its quadrature is then exact for every f.
    """
    if vectors < 1 or steps < 1 or points < 2 or not broadening > 0:
        raise ValueError("slq_density needs vectors >= 1, steps >= 1, points >= 2, broadening > 0")
    all_nodes: list[Tensor] = []
    all_weights: list[Tensor] = []
    hvps = 0
    for i in range(vectors):
        start = rademacher(n, probe_generator(seed, "slq", i))
        res = lanczos(op, n, steps, dtype=dtype, device=device, start=start, keep_basis=False,
                      restart=False, generator=probe_generator(seed, "slq-restart", i))
        hvps += res.hvps
        nodes, weights = gauss_quadrature(res)
        all_nodes.append(nodes)
        all_weights.append(weights)
    nodes = torch.cat(all_nodes)
    weights = torch.cat(all_weights) / vectors
    grid, dens = _broaden(nodes, weights, broadening, points)
    return Density(nodes=[x.tolist() for x in all_nodes], weights=[x.tolist() for x in all_weights],
                   grid=grid.tolist(), density=dens.tolist(), hvps=hvps)


def _broaden(nodes: Tensor, weights: Tensor, broadening: float,
             points: int) -> tuple[Tensor, Tensor]:
    if not bool(torch.isfinite(nodes).all()):
        nan = torch.full((points,), math.nan, dtype=torch.float64)
        return nan, nan.clone()
    lo, hi = float(nodes.min()), float(nodes.max())
    sigma = broadening * (hi - lo) if hi > lo else broadening
    grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, points, dtype=torch.float64)
    z = (grid[:, None] - nodes[None, :]) / sigma
    dens = (torch.exp(-0.5 * z**2) * weights[None, :]).sum(1) / (sigma * math.sqrt(2 * math.pi))
    # The Gaussians' mass outside +-5 sigma (~6e-7) and the trapezoid's error on a coarse grid
    # are removed by normalising on the grid itself: what is drawn integrates to 1.
    return grid, dens / torch.trapezoid(dens, grid)


def gradient_share(g: Tensor, vectors: Tensor) -> float:
    """||P_k g||^2 / ||g||^2 for the subspace spanned by the orthonormal rows of `vectors`
    (NaN for a zero gradient: no direction to share)."""
    g = g.detach().reshape(-1).to(device=vectors.device, dtype=torch.float64)
    total = float(g @ g)
    if total == 0.0 or not math.isfinite(total):
        return math.nan
    coords = vectors.to(torch.float64) @ g
    return float(coords @ coords) / total


class NetworkHvp:
    """H v for a scalar loss of a parameter dict, by double backward, over flat vectors.

    The first-order gradient is built once with create_graph=True (on the first call) and
    every HVP is one backward through it (retain_graph): each HVP is then of the very same
    function, including a loss whose forward is random (noisy BatchNorm draws once), and
    costs a backward instead of a forward plus two backwards. The price is memory: the graph
    of the whole loss is kept while the operator lives (for a loss that sums over evaluation
    batches, all of them). The input vector may be any float dtype; the answer comes in the
    parameters' dtype, on their device.
    """

    def __init__(self, loss_fn: Callable[[dict[str, Tensor]], Tensor],
                 params: dict[str, Tensor]) -> None:
        self.loss_fn = loss_fn
        self.names = list(params)
        self.leaves = [p.detach().requires_grad_(True) for p in params.values()]
        self.n = sum(p.numel() for p in self.leaves)
        self.dtype = self.leaves[0].dtype
        self.device = self.leaves[0].device
        self.hvps = 0
        self.loss: float | None = None
        self._grads: list[Tensor] | None = None

    def _build(self) -> list[Tensor]:
        if self._grads is None:
            with torch.enable_grad():
                loss = self.loss_fn(dict(zip(self.names, self.leaves, strict=True)))
                grads = torch.autograd.grad(loss, self.leaves, create_graph=True,
                                            allow_unused=True)
            self.loss = float(loss.detach())
            self._grads = [torch.zeros_like(p) if g is None else g
                           for p, g in zip(self.leaves, grads, strict=True)]
        return self._grads

    def gradient(self) -> Tensor:
        """The flat gradient of the loss at the parameters (detached)."""
        return torch.cat([g.detach().reshape(-1) for g in self._build()])

    def __call__(self, v: Tensor) -> Tensor:
        grads = self._build()
        v = v.detach().reshape(-1).to(device=self.device, dtype=self.dtype)
        if v.numel() != self.n:
            raise ValueError(f"vector of {v.numel()} entries for {self.n} parameters")
        chunks = list(torch.split(v, [p.numel() for p in self.leaves]))
        # A gradient entry that does not depend on any parameter (grad_fn None) has a zero
        # Hessian row: leave it out of the backward, which would otherwise refuse it.
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        hv = torch.autograd.grad(
            [grads[i] for i in live], self.leaves,
            grad_outputs=[chunks[i].view_as(grads[i]) for i in live],
            retain_graph=True, allow_unused=True,
        ) if live else [None] * len(self.leaves)
        self.hvps += 1
        return torch.cat([torch.zeros(p.numel(), dtype=self.dtype, device=self.device)
                          if h is None else h.reshape(-1)
                          for p, h in zip(self.leaves, hv, strict=True)])


def network_hvp(loss_fn_of_params: Callable[[dict[str, Tensor]], Tensor],
                params: dict[str, Tensor]) -> tuple[NetworkHvp, int]:
    """(op, n): the HVP operator of loss_fn_of_params at params, and the number of parameters.
    op.gradient() gives the gradient there (for gradient_share), op.loss the loss value."""
    op = NetworkHvp(loss_fn_of_params, params)
    return op, op.n


def spectrum(op: Operator, n: int, cfg: Spectrum, *, seed: int, grad: Tensor | None = None,
             dtype: torch.dtype | None = None,
             device: torch.device | str | None = None) -> dict[str, Any]:
    """Every spectrum quantity of cfg (server.analysis_spec.Spectrum) as a JSON-able dict.

    dtype/device default to the operator's own when it has them (NetworkHvp), else float64
    on the CPU. Non-finite values (a diverged network) stay NaN: they are data.
    """
    dtype = dtype or getattr(op, "dtype", torch.float64)
    device = device or getattr(op, "device", None)
    top = top_eigen(op, n, cfg.top_k, cfg.lanczos_steps, seed=seed, dtype=dtype, device=device)
    trace = hutchinson_trace(op, n, cfg.trace_probes, seed=seed, dtype=dtype, device=device)
    dens = slq_density(op, n, cfg.slq_steps, cfg.slq_vectors, seed=seed,
                       broadening=cfg.broadening, points=cfg.density_points,
                       dtype=dtype, device=device)
    return {
        "top_eigenvalues": top.values,
        "trace": trace.mean,
        "trace_stderr": trace.stderr,
        "trace_probes": trace.probes,
        "density": {"x": dens.grid, "y": dens.density},
        "slq": {"nodes": dens.nodes, "weights": dens.weights, "steps": cfg.slq_steps,
                "broadening": cfg.broadening},
        "gradient_share": None if grad is None else gradient_share(grad, top.vectors),
        "hvps": top.hvps + trace.hvps + dens.hvps,
        "lanczos_residuals": top.residuals,
    }
