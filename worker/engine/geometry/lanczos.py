"""Lanczos on a symmetric operator, with full reorthogonalisation, and what its tridiagonal gives.

An operator is any callable mapping a 1-D vector of size n to H v (a Hessian-vector product,
or a matrix in a test). The recurrences (each H q in float64, alpha, beta) and the tridiagonal T
are kept in float64 whatever dtype the operator works in. The basis Q is stored in the precision
the operator is applied in: float64 for a float64 operator, float32 otherwise. A float32 HVP
sees its input rounded to float32 anyway (so the float32 basis is exactly the vectors H was
applied to) and is itself noisy at ~1e-7; Gram-Schmidt against every earlier basis vector
(twice when needed: "twice is enough", Parlett) keeps the basis orthonormal to far below the
square root of its precision's epsilon (~1e-13 in float64, ~1e-5 in float32:
semi-orthogonality, which is all that Ritz values as accurate as the operator need, Simon
1984), so no ghost copies of converged eigenvalues appear and the eigenvalues of T are honest
Ritz values (PyHessian's power iteration with deflation needs ~tens of HVPs per
eigenvalue instead; Ghorbani et al. 2019 use the same Lanczos for SLQ). The reads of the basis
in that Gram-Schmidt are Lanczos's whole cost beyond its HVPs (about m^2 n values over m
steps): a float32 basis halves them (bench/bench_hessian.py).

From T = S diag(theta) S^T:
- Ritz values theta_i approximate eigenvalues of H; Ritz vectors Q^T s_i, with the residual
  ||H y_i - theta_i y_i|| = |beta_m s_{m,i}| known for free (no extra HVP);
- Gauss quadrature: nodes theta_i and weights s_{1,i}^2 satisfy
  sum_i w_i f(theta_i) = q^T f(H) q exactly for polynomials f of degree <= 2m - 1, where q is
  the unit start vector: the building block of stochastic Lanczos quadrature (SLQ).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from worker.engine.state import derive_seed

Operator = Callable[[Tensor], Tensor]

# A Lanczos vector whose norm after reorthogonalisation falls below this fraction of ||H||
# (estimated by the largest |alpha| + beta seen) means the Krylov space is invariant.
BREAKDOWN_RTOL = 1e-10
REPEAT_BELOW = 1e-3  # see _project_out


@dataclass
class LanczosResult:
    """alphas: T's diagonal (steps,); betas: its off-diagonal (steps - 1,), 0.0 where a new
    block was started after an invariant subspace; residual_beta: the coupling to the next
    (never computed) vector, so that Ritz residuals are |residual_beta * s_{steps,i}|; basis:
    Q (steps x n, orthonormal rows; float64 for a float64 operator, else float32) unless
    keep_basis=False. steps <= m: fewer when n
    is reached (or, with restart=False, at an invariant subspace)."""

    alphas: Tensor
    betas: Tensor
    residual_beta: float
    basis: Tensor | None
    hvps: int

    @property
    def steps(self) -> int:
        return int(self.alphas.numel())

    def tridiagonal(self) -> Tensor:
        t = torch.diag(self.alphas)
        if self.steps > 1:
            t += torch.diag(self.betas, 1) + torch.diag(self.betas, -1)
        return t

    def eigh(self) -> tuple[Tensor, Tensor]:
        """Eigenvalues (ascending) and eigenvectors (columns) of T; NaN if T is not finite
        (a diverged network's HVPs): the values are then reported as NaN, not as an error."""
        t = self.tridiagonal()
        if not bool(torch.isfinite(t).all()):
            nan = torch.full((self.steps,), math.nan, dtype=torch.float64)
            return nan, torch.full((self.steps, self.steps), math.nan, dtype=torch.float64)
        return torch.linalg.eigh(t)


def probe_generator(seed: int, purpose: str, index: int = 0) -> torch.Generator:
    """The CPU generator of one random stream of a spectrum, e.g. ("slq", 2): the start vector
    of SLQ run 2. Drawn on the CPU so that every device sees the same numbers; never the global
    RNG, so that an analysis cannot shift anything else."""
    return torch.Generator().manual_seed(derive_seed(seed, "hessian", purpose, index))


def gaussian_vector(n: int, generator: torch.Generator) -> Tensor:
    """A unit N(0, I) vector in float64, drawn on the CPU (same numbers on every device)."""
    v = torch.randn(n, generator=generator, dtype=torch.float64)
    return v / v.norm()


def rademacher(n: int, generator: torch.Generator) -> Tensor:
    """Random signs +-1 as float64 (CPU): Hutchinson's and SLQ's probe vectors."""
    bits = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int8)
    return bits.to(torch.float64) * 2.0 - 1.0


def _project_out(w: Tensor, basis: Tensor, low: Tensor | None = None,
                 spare: Tensor | None = None) -> Tensor:
    """Removes from w, in place, its components on the rows of basis, and returns them
    (classical Gram-Schmidt: two matrix-vector products, one read of the basis each).

    A basis in a lower precision than w (float32 against float64) is applied in its own
    precision: w is rounded into `low` and the correction computed into `spare` (two
    preallocated n-vectors of the basis's dtype), then subtracted from w in w's precision.

    One pass leaves w orthogonal to the basis up to ~eps * ||w_in|| / ||w_out||; a second pass
    ("twice is enough", Parlett) runs only when the first cancelled more than REPEAT_BELOW of
    w, so that this stays far under the sqrt(eps) that accurate Ritz values need (Simon 1984).
    Lanczos's cost beyond its HVPs is these reads of the basis (about m^2 n values over m
    steps): skipping needless second passes halves it.
    """
    before = float(w.norm())

    def once() -> Tensor:
        if basis.dtype == w.dtype:
            coef = basis @ w
            w.addmv_(basis.T, coef, alpha=-1.0)
            return coef
        assert low is not None and spare is not None
        low.copy_(w)
        coef = basis @ low
        torch.mv(basis.T, coef, out=spare)
        w.sub_(spare)
        return coef.to(w.dtype)

    coef = once()
    if float(w.norm()) < REPEAT_BELOW * before:
        coef += once()
    return coef


def lanczos(
    op: Operator,
    n: int,
    m: int,
    *,
    seed: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    reorthogonalize: bool = True,
    start: Tensor | None = None,
    keep_basis: bool = True,
    restart: bool = True,
    generator: torch.Generator | None = None,
) -> LanczosResult:
    """m steps of Lanczos on op (one HVP each), starting from `start` (normalised here) or a
    Gaussian vector drawn from `generator`, by default probe_generator(seed, "lanczos") (the
    same stream top_eigen uses).

    The operator gets vectors in `dtype` on `device` and may answer in any float dtype.
    With reorthogonalize=False it is the plain three-term recurrence (for comparison only: it
    loses orthogonality and repeats converged eigenvalues). At an invariant subspace (for
    example a start vector inside an eigenspace) restart=True continues from a fresh random
    vector orthogonal to the basis, with a zero coupling, so that top-k can still find
    eigenvalues the start vector did not see; restart=False stops there, which is what a
    quadrature wants (the Krylov space of its start vector is then exhausted, exactly).
    """
    if m < 1 or n < 1:
        raise ValueError(f"lanczos needs m >= 1 and n >= 1, got m={m}, n={n}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generator is None:
        if seed is None:
            raise ValueError("lanczos needs a seed (or a generator) for its random vectors")
        generator = probe_generator(seed, "lanczos")
    if start is None:
        q = gaussian_vector(n, generator)
    else:
        if start.numel() != n:
            raise ValueError(f"start vector has {start.numel()} entries, the operator {n}")
        q = start.detach().reshape(-1).to(torch.float64).cpu()
        q = q / q.norm()
    steps = min(m, n)
    # Preallocated and written in place: a fresh n-vector per operation costs page faults
    # (large allocations are mmapped anew each time) that, on a small model, rival the HVP.
    basis_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    basis = torch.empty((steps, n), dtype=basis_dtype, device=device)
    basis[0].copy_(q)
    w = torch.empty(n, dtype=torch.float64, device=device)
    low, spare = (None, None) if basis_dtype == torch.float64 else (
        torch.empty(n, dtype=basis_dtype, device=device),
        torch.empty(n, dtype=basis_dtype, device=device))
    q_op = None if dtype == basis_dtype else torch.empty(n, dtype=dtype, device=device)
    alphas: list[float] = []
    betas: list[float] = []
    beta, scale, hvps = 0.0, 0.0, 0
    for j in range(steps):
        q = basis[j]
        w.copy_(op(q if q_op is None else q_op.copy_(q)).detach().reshape(-1))
        hvps += 1
        if reorthogonalize:
            # Against the whole basis, q_j and q_{j-1} included: this subsumes the three-term
            # recurrence, and alpha_j is the component on q_j (in float64: a float32 basis
            # gives the projection, the dot product of q_j with H q_j is taken exactly).
            if low is None:
                alpha = float(_project_out(w, basis[: j + 1])[j])
            else:
                alpha = float(torch.dot(q.to(torch.float64), w))
                _project_out(w, basis[: j + 1], low, spare)
        else:
            alpha = float(torch.dot(q.to(torch.float64), w))
            w.add_(q, alpha=-alpha)
            if j > 0:
                w.add_(basis[j - 1], alpha=-beta)
        alphas.append(alpha)
        beta = float(w.norm())
        if not math.isfinite(alpha) or not math.isfinite(beta):
            break  # a non-finite HVP: stop, T (with the NaN) reports NaN eigenvalues
        scale = max(scale, abs(alpha) + beta)
        if j + 1 == steps:
            break
        if beta > BREAKDOWN_RTOL * max(scale, 1e-300):
            basis[j + 1].copy_(w.div_(beta))
            betas.append(beta)
            continue
        if not restart:
            break
        # Invariant subspace: a new block from a random vector orthogonal to everything so far.
        fresh = gaussian_vector(n, generator).to(device)
        _project_out(fresh, basis[: j + 1], low, spare)
        basis[j + 1].copy_(fresh / fresh.norm())
        betas.append(0.0)
        beta = 0.0
    done = len(alphas)
    return LanczosResult(
        alphas=torch.tensor(alphas, dtype=torch.float64),
        betas=torch.tensor(betas[: max(done - 1, 0)], dtype=torch.float64),
        residual_beta=beta,
        basis=basis[:done] if keep_basis else None,
        hvps=hvps,
    )


def gauss_quadrature(result: LanczosResult) -> tuple[Tensor, Tensor]:
    """Nodes (Ritz values, ascending) and weights (squared first components of T's
    eigenvectors, summing to 1) of the Lanczos run's start vector."""
    nodes, vecs = result.eigh()
    return nodes, vecs[0] ** 2
