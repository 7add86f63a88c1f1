"""The principal directions of an optimiser's path (Li et al. 2018, section 7).

The rows of M are d_i = theta_i - theta_T, one per snapshot, uncentred (as Li et al.: the plane
passes through the final point theta_T, which sits at the origin of the trajectory plot). The
principal directions are M's top right singular vectors; the explained variance of direction k
is s_k^2 / sum_j s_j^2 = s_k^2 / ||M||_F^2; the coordinates of snapshot i are M's rows projected
on the directions, U[i, :k] * s[:k].

The SVD is taken through M's n x n Gram matrix G = M M^T (n snapshots), built parameter by
parameter in float64 and decomposed with a symmetric eigensolver: G = U diag(s^2) U^T, and the
directions are v_k = M^T u_k / s_k. So the memory is n^2 plus one parameter's n rows, never the
n x P matrix itself (1,000 snapshots of a 15M-parameter VGG would be 120 GB in float64). The
Gram route squares M's condition number, which costs precision only in singular values far below
the top ones; the top-k directions, their ratios and coordinates stay at float64 precision
whenever s_k is well separated from s_{k+1} (tests: 1e-10 on a synthetic plane).

Sign convention: each direction's entry of largest magnitude (the first one in flat order on a
tie) is positive; the coordinates follow the sign. Directions are unit vectors in the flat
parameter space (not filter-normalised): a coordinate is a Euclidean distance along it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from worker.engine.geometry.directions import Direction


@dataclass
class PcaResult:
    directions: list[Direction]  # k unit directions, in the dtype/device of `final`
    explained_variance: list[float]  # s_k^2 / ||M||_F^2 per direction
    coords: list[tuple[float, ...]]  # per snapshot, its k coordinates


def pca_directions(
    snapshots: Sequence[Mapping[str, Tensor]], final: Mapping[str, Tensor], k: int = 2
) -> PcaResult:
    """The top-k principal directions of theta_i - theta_T (see the module docstring)."""
    n = len(snapshots)
    if k < 1:
        raise ValueError("k must be at least 1")
    if n < k:
        raise ValueError(f"{k} principal directions need at least {k} snapshots, got {n}")
    names = list(final)
    device = next(iter(final.values())).device
    gram = torch.zeros((n, n), dtype=torch.float64, device=device)
    for name in names:
        rows = _rows(snapshots, final, name)
        gram += rows @ rows.T
    total = float(torch.trace(gram))
    if total == 0.0:
        raise ValueError("every snapshot equals the final weights: the trajectory has no extent")
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    s2 = evals.flip(0)[:k].clamp_min(0.0)
    u = evecs.flip(1)[:, :k]
    # Below ~eps * ||M||^2 an eigenvalue of G is round-off: no direction to speak of.
    if float(s2[-1]) <= 1e-13 * total:
        raise ValueError(
            f"the trajectory spans fewer than {k} dimensions: no principal direction {k}"
        )
    s = s2.sqrt()
    # v_k = M^T u_k / s_k, parameter by parameter, in float64.
    dirs64 = {name: (_rows(snapshots, final, name).T @ u / s).T for name in names}  # (k, numel)
    signs = _signs(dirs64, k)
    u = u * signs
    coords = (u * s).tolist()
    directions = [
        {name: (dirs64[name][j] * signs[j]).reshape(final[name].shape).to(final[name].dtype)
         for name in names}
        for j in range(k)
    ]
    return PcaResult(
        directions=directions,
        explained_variance=[float(v) / total for v in s2],
        coords=[tuple(c) for c in coords],
    )


def _rows(snapshots: Sequence[Mapping[str, Tensor]], final: Mapping[str, Tensor],
          name: str) -> Tensor:
    """(n, numel) float64: theta_i - theta_T of one parameter, for every snapshot."""
    t = final[name].detach().double().reshape(-1)
    return torch.stack([s[name].detach().to(t.device).double().reshape(-1) - t
                        for s in snapshots])


def _signs(dirs64: Mapping[str, Tensor], k: int) -> Tensor:
    """+1/-1 per direction, so that its largest-magnitude entry (first on a tie) is positive."""
    signs = torch.ones(k, dtype=torch.float64, device=next(iter(dirs64.values())).device)
    for j in range(k):
        best, value = -1.0, 0.0
        for d in dirs64.values():
            if d.shape[1] == 0:
                continue
            i = int(torch.argmax(d[j].abs()))  # the first maximum on a tie
            m = float(d[j, i].abs())
            if m > best:  # strict: an earlier parameter wins a tie
                best, value = m, float(d[j, i])
        if value < 0:
            signs[j] = -1.0
    return signs
