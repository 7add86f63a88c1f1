"""Writing the parameters of a grid point, theta + c_1 d_1 + ... + c_n d_n, into a network.

The sum is taken in one fixed order: base = theta + c_2 d_2 + ... + c_n d_n (left to right),
then base + c_1 d_1. The base depends only on the trailing coordinates, and along a row of a
grid in flat order (index iy * nx + ix: c_1 varies fastest) they stay the same, so the writer
keeps the last base and a point costs one pass reading base and d_1 and writing the target,
instead of reading theta and every direction and writing the target twice. On the CPU, where
the forwards that follow each write sweep the caches, that halves the write's cost (0.25 ->
0.12 ms per point for the 6 x 128 MLP, 5 % of its forward; bench/bench_surface.py).

A point's value never depends on whether its base was kept or made afresh (the same ops on
the same operands), so a surface cut into chunks still equals the single-call surface bit for
bit. The same ops on one flat buffer (bn_modes._flatten) or on per-tensor lists (torch._foreach)
give the same bits: add(out=) is copy-then-add_, elementwise either way.

A vmap group's K points are written at once (`write_stacked`): each parameter's (K, ...) stack
is theta, then + c_i d_i for i = 2..n, then + c_1 d_1, as columns of coefficients, three or so
kernels per parameter whatever K is. Written point by point, a group of K costs K x (a view
per parameter plus two foreach kernels), which grows with the larger groups a GPU takes
(group_size.py). Both orders add the same terms in the same order; whether a backend fuses the
multiply into the add may differ between them, so the stacked values may differ from the
per-point ones in the last bit (the vmap path is compared with the loop to a tolerance, never
bit for bit; a group is always written the same way, so chunks still agree bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class PointWriter:
    """theta and the directions as lists of tensors in the same layout as the targets (one flat
    tensor each, or one tensor per parameter); one writer per (theta, directions)."""

    def __init__(self, theta: list[Tensor], dirs: list[list[Tensor]]) -> None:
        self.theta, self.dirs = theta, dirs
        self._base: list[Tensor] = []  # theta + the trailing terms of the last point written
        self._base_of: tuple[float, ...] | None = None  # ... and their coordinates

    def write(self, out: list[Tensor], c: Sequence[float]) -> None:
        """out = theta + sum_i c_i d_i, in the order of the module docstring."""
        if len(c) != len(self.dirs):
            raise ValueError(f"a point has {len(c)} coordinates for {len(self.dirs)} directions")
        with torch.no_grad():
            if not self.dirs:
                torch._foreach_copy_(out, self.theta)
                return
            base = self._trailing([float(ci) for ci in c[1:]])
            if len(out) == 1:
                torch.add(base[0], self.dirs[0][0], alpha=float(c[0]), out=out[0])
            else:
                torch._foreach_copy_(out, base)
                torch._foreach_add_(out, self.dirs[0], alpha=float(c[0]))

    def write_stacked(self, out: list[Tensor], coords: Sequence[Sequence[float]]) -> None:
        """out[t][j] = theta[t] + sum_i coords[j][i] d_i[t] for every point j (out[t] has
        len(coords) rows), in the order of the module docstring."""
        if any(len(c) != len(self.dirs) for c in coords):
            raise ValueError(f"every point needs {len(self.dirs)} coordinates")
        with torch.no_grad():
            if not self.dirs:
                for o, t in zip(out, self.theta, strict=True):
                    o.copy_(t.expand_as(o))
                return
            first = self.theta[0]
            c = torch.tensor([[float(ci) for ci in p] for p in coords], dtype=first.dtype,
                             device=first.device)  # (K, n)
            order = [*range(1, len(self.dirs)), 0]  # trailing terms first, then c_1 d_1
            for t, (o, th) in enumerate(zip(out, self.theta, strict=True)):
                col = (len(coords),) + (1,) * th.dim()
                o.copy_(th.expand_as(o))
                for i in order:
                    o.addcmul_(c[:, i].reshape(col), self.dirs[i][t])

    def _trailing(self, tail: list[float]) -> list[Tensor]:
        """theta + c_2 d_2 + ... + c_n d_n: theta itself for one direction, else the kept base,
        made afresh when the trailing coordinates change."""
        if not tail:
            return self.theta
        if self._base_of != tuple(tail):
            if not self._base:
                self._base = [torch.empty_like(t) for t in self.theta]
            self._base_of = None  # invalid while it is rewritten (an exception halfway)
            torch._foreach_copy_(self._base, self.theta)
            for d, ci in zip(self.dirs[1:], tail, strict=True):
                torch._foreach_add_(self._base, d, alpha=ci)
            self._base_of = tuple(tail)
        return self._base
