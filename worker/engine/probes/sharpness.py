"""Sharpness: the algebraically largest Hessian eigenvalue of L on B_t (beyond the paper; Cohen
et al. 2021).

Lanczos on Hessian-vector products (double backward through the same train-mode forward the
other probes use). Gradient descent on a quadratic is stable only while this stays under 2/LR,
the "edge of stability" line the dashboard draws next to it.

Why Lanczos and not power iteration: power iteration converges to the eigenvalue of largest
*magnitude*, which in a non-convex landscape may be a negative one (the wrong quantity for the
2/LR comparison), and its Rayleigh quotient approaches the top from below at the rate
(lambda_2 / lambda_1)^(2k): a fixed 20 iterations read up to ~10 % low on real nets, by an
amount that changed from step to step with the re-seeded start vector. The largest Ritz value
of k Lanczos steps is the largest Rayleigh quotient over the whole Krylov space of the start
vector, so it is never below the power iteration's k-th iterate, converges at Chebyshev rate,
and is the algebraically largest eigenvalue whatever the signs of the others.

The Lanczos here is the plain three-term recurrence (with one extra projection against the
current vector), keeping three parameter-sized vectors, not worker/engine/geometry/lanczos.py's
fully reorthogonalised basis (k parameter-sized vectors): this probe may run every few steps
during training on any model, where k x params of memory is too much. Without full
reorthogonalisation converged Ritz values get ghost copies, which does not matter for the
largest one: T_k is a principal submatrix of T_{k+1}, so by Cauchy interlacing its largest
eigenvalue never decreases, and in floating point it stays within rounding of the spectrum
(Paige 1980).

Stopping: after step k >= 2, when |theta_k - theta_{k-1}| <= tol * |theta_k| (theta_k the
largest Ritz value after k steps), or at max_iters, or when the Krylov space is exhausted (an
exact answer). The steps taken (one HVP each) are recorded as `sharpness/iters`.
"""

from __future__ import annotations

import math

import torch

from worker.engine.probes.base import Probe, ProbeContext, ProbeOutput, global_norm
from worker.engine.state import derive_seed

# A residual below this fraction of the largest |alpha| + beta seen means the Krylov space is
# invariant: the largest Ritz value is then an eigenvalue exactly (as geometry/lanczos.py).
BREAKDOWN_RTOL = 1e-10


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """<a, b> summed in float64 (one device sync)."""
    return float(sum(torch.sum(x * y, dtype=torch.float64) for x, y in zip(a, b, strict=True)))


def largest_ritz(alphas: list[float], betas: list[float]) -> float:
    """The largest eigenvalue of the symmetric tridiagonal with diagonal alphas and
    off-diagonal betas (float64; NaN when any entry is not finite)."""
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        b = torch.tensor(betas, dtype=torch.float64)
        t += torch.diag(b, 1) + torch.diag(b, -1)
    if not bool(torch.isfinite(t).all()):
        return math.nan
    return float(torch.linalg.eigvalsh(t)[-1])


class SharpnessProbe(Probe):
    name = "sharpness"

    def __init__(self, every: int, max_iters: int, seed: int, tol: float = 1e-3) -> None:
        super().__init__(every)
        self.max_iters = max_iters
        self.tol = tol
        self.seed = seed

    def measure(self, ctx: ProbeContext) -> ProbeOutput:
        leaves = [t.detach().requires_grad_(True) for t in ctx.params.values()]
        loss = ctx.differentiable_loss(dict(zip(ctx.params, leaves, strict=True)))
        grads = torch.autograd.grad(loss, leaves, create_graph=True)

        def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
            return [h.detach() for h in
                    torch.autograd.grad(grads, leaves, grad_outputs=v, retain_graph=True)]

        eig, iters = self.top_eigenvalue(hvp, self._start_vector(leaves, ctx.step))
        return ProbeOutput(scalars={
            "sharpness/top_eig": eig, "sharpness/iters": float(iters),
            "sharpness/edge": 2.0 / ctx.lr,
        })

    def top_eigenvalue(self, hvp, q: list[torch.Tensor]) -> tuple[float, int]:
        """(the largest Ritz value, the Lanczos steps taken) from the unit start vector q."""
        n = sum(t.numel() for t in q)
        alphas: list[float] = []
        betas: list[float] = []
        q_prev: list[torch.Tensor] | None = None
        theta, scale = math.nan, 0.0
        for k in range(1, min(self.max_iters, n) + 1):
            w = hvp(q)
            alpha = _dot(q, w)
            torch._foreach_add_(w, q, alpha=-alpha)
            if q_prev is not None:
                torch._foreach_add_(w, q_prev, alpha=-betas[-1])
            # One more projection against q: the recurrence's alpha q cancels most of w, and
            # what rounding leaves would otherwise grow along q.
            torch._foreach_add_(w, q, alpha=-_dot(q, w))
            beta = global_norm(w)
            alphas.append(alpha)
            previous, theta = theta, largest_ritz(alphas, betas)
            if not (math.isfinite(theta) and math.isfinite(beta)):
                return math.nan, k  # a diverged network: NaN is data
            scale = max(scale, abs(alpha) + beta)
            if k >= 2 and abs(theta - previous) <= self.tol * abs(theta):
                return theta, k
            if beta <= BREAKDOWN_RTOL * scale or scale == 0.0:
                return theta, k  # the Krylov space is exhausted: theta is exact
            betas.append(beta)
            q_prev, q = q, torch._foreach_div(w, beta)
        return theta, len(alphas)

    def _start_vector(self, like: list[torch.Tensor], step: int) -> list[torch.Tensor]:
        """A unit random vector from a generator of its own: the global RNG is never touched."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "sharpness", step))
        v = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in like]
        norm = global_norm(v)
        return [x / norm for x in v]
