"""Statistics of a 2-D loss surface (an analysis of kind "surface": loss[iy][ix] over the
coordinates x, y of two directions, the trained point at (0, 0)): how convex it looks.

Li et al. 2018 judge convexity by eye on filter-normalised surfaces (their Fig 5) and by the
ratio |lambda_min / lambda_max| of the Hessian across the surface (their Fig 7). Over a grid,
the same questions become counts, each over the grid points of a *disc* around the trained
point (radius in the directions' units, so the grid's corners, which Li et al.'s square plots
show but barely read, do not weigh in):

- `curvature_cells`: at every interior grid point, the finite-difference 2x2 Hessian of the
  surface (three-point second differences, the four-point cross difference) and its two
  eigenvalues. The surface's Hessian is the full Hessian restricted to the plane of the two
  directions, so negative curvature here is negative curvature of the loss itself (the converse
  fails: a convex-looking plane can hide it; Li et al., section 6).
- `nonconvex_fraction`: the share of disc cells whose surface Hessian has *significant*
  negative curvature: lambda_min < -NEG_RATIO * max(lambda_max, 0), Fig 7's |lambda_min /
  lambda_max| read on the plane. Li et al. colour "near-zero negative eigenvalues relative to
  the positive eigenvalues" as convex and "significant levels of negative curvature" as not;
  we read "near zero relative to" as more than an order of magnitude below, NEG_RATIO = 0.1.
  A cell with no positive curvature at all and some negative is non-convex.
- `misdirected_fraction`: the share of disc points (the centre excluded) where the surface's
  descent direction -grad f does not point towards the trained point, grad f . (p - c) <= 0:
  Li et al.'s "large regions where the gradient directions ... do not point towards the
  minimizer at the center". For a convex surface minimised at the centre it is exactly 0
  (convexity gives grad f(p) . (p - c) >= f(p) - f(c) >= 0).
- `spurious_minima`: strict local minima (below all 8 neighbours) in the disc, less one: a
  convex surface has at most one.

Rounding: the losses come in float32, so a second difference carries noise of about
ROUNDING * |f| / h^2; curvatures (and gradient components along p - c) within that of zero
count as zero, never as negative. Non-finite losses (a point whose loss overflowed): a cell
whose stencil touches one is left out of both the count and the total (reported as
`skipped`); a disc with no finite cell cannot be judged (MissingData), so an overflowing
surface is never passed off as convex or as chaotic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from server.reproduction.runs import MissingData

NEG_RATIO = 0.1  # Fig 7: negative curvature "near zero relative to" the positive: < 1/10 of it
ROUNDING = 1e-5  # float32 unit roundoff (6e-8) x 4 (the stencil) x ~40 (sums over the batch)

Grid = Sequence[Sequence[float]]


@dataclass(frozen=True)
class Cell:
    """One interior grid point: its coordinates, the surface's gradient and the eigenvalues of
    its 2x2 Hessian (lo <= hi), and the rounding scale of its stencil."""

    ix: int
    iy: int
    x: float
    y: float
    gx: float
    gy: float
    lo: float
    hi: float
    noise: float  # curvature within this of zero is rounding
    finite: bool


@dataclass(frozen=True)
class Count:
    """A share of the disc: `hits` of `total` decidable cells; `skipped` had non-finite
    losses in their stencil."""

    hits: int
    total: int
    skipped: int

    @property
    def fraction(self) -> float:
        if self.total == 0:
            raise MissingData(f"no finite cell in the disc ({self.skipped} non-finite)")
        return self.hits / self.total


def _spacing(coords: Sequence[float]) -> float:
    if len(coords) < 3:
        raise ValueError("a surface needs at least 3 points per axis for second differences")
    h = (coords[-1] - coords[0]) / (len(coords) - 1)
    if not h > 0:
        raise ValueError("coordinates must increase")
    return h


def _check(loss: Grid, xs: Sequence[float], ys: Sequence[float]) -> None:
    if len(loss) != len(ys) or any(len(row) != len(xs) for row in loss):
        raise ValueError(f"loss must be {len(ys)} rows of {len(xs)} (loss[iy][ix])")


def curvature_cells(loss: Grid, xs: Sequence[float], ys: Sequence[float]) -> list[Cell]:
    """Every interior point's central-difference gradient and 2x2 Hessian eigenvalues (exact
    for a quadratic surface)."""
    _check(loss, xs, ys)
    hx, hy = _spacing(xs), _spacing(ys)
    cells = []
    for iy in range(1, len(ys) - 1):
        for ix in range(1, len(xs) - 1):
            st = [loss[iy + dy][ix + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            if not all(math.isfinite(v) for v in st):
                cells.append(Cell(ix, iy, xs[ix], ys[iy], math.nan, math.nan, math.nan,
                                  math.nan, math.nan, False))
                continue
            f = loss[iy][ix]
            fxx = (loss[iy][ix + 1] - 2 * f + loss[iy][ix - 1]) / hx**2
            fyy = (loss[iy + 1][ix] - 2 * f + loss[iy - 1][ix]) / hy**2
            fxy = (loss[iy + 1][ix + 1] - loss[iy + 1][ix - 1] - loss[iy - 1][ix + 1]
                   + loss[iy - 1][ix - 1]) / (4 * hx * hy)
            mean, rad = (fxx + fyy) / 2, math.hypot((fxx - fyy) / 2, fxy)
            gx = (loss[iy][ix + 1] - loss[iy][ix - 1]) / (2 * hx)
            gy = (loss[iy + 1][ix] - loss[iy - 1][ix]) / (2 * hy)
            noise = ROUNDING * max(abs(v) for v in st) / min(hx, hy) ** 2
            cells.append(Cell(ix, iy, xs[ix], ys[iy], gx, gy, mean - rad, mean + rad, noise,
                              True))
    return cells


def in_disc(cell: Cell, radius: float | None) -> bool:
    """Within `radius` of the trained point (None: the whole interior)."""
    return radius is None or math.hypot(cell.x, cell.y) <= radius * (1 + 1e-9)


def nonconvex(cell: Cell) -> bool:
    """Significant negative curvature: lambda_min below -NEG_RATIO * lambda_max (or below
    zero when no curvature is positive), by more than rounding."""
    return cell.lo < -max(NEG_RATIO * max(cell.hi, 0.0), cell.noise)


def nonconvex_fraction(loss: Grid, xs: Sequence[float], ys: Sequence[float],
                       radius: float | None = 1.0) -> Count:
    cells = [c for c in curvature_cells(loss, xs, ys) if in_disc(c, radius)]
    ok = [c for c in cells if c.finite]
    return Count(sum(nonconvex(c) for c in ok), len(ok), len(cells) - len(ok))


def misdirected_fraction(loss: Grid, xs: Sequence[float], ys: Sequence[float],
                         radius: float | None = 1.0) -> Count:
    """Points where -grad f does not point towards (0, 0): grad f . p <= rounding."""
    hx, hy = _spacing(xs), _spacing(ys)
    cells = [c for c in curvature_cells(loss, xs, ys)
             if in_disc(c, radius) and math.hypot(c.x / hx, c.y / hy) > 0.5]  # not the centre
    ok = [c for c in cells if c.finite]
    # The gradient's rounding: noise * h (a first difference divides by h, not h^2).
    hits = sum(c.gx * c.x + c.gy * c.y <= c.noise * min(hx, hy) * math.hypot(c.x, c.y)
               for c in ok)
    return Count(hits, len(ok), len(cells) - len(ok))


def spurious_minima(loss: Grid, xs: Sequence[float], ys: Sequence[float],
                    radius: float | None = 1.0) -> int:
    """Strict local minima (below all 8 neighbours) among the disc's interior points, less
    one (a convex surface has at most one); non-finite stencils are never minima."""
    _check(loss, xs, ys)
    found = 0
    for c in curvature_cells(loss, xs, ys):
        if not (c.finite and in_disc(c, radius)):
            continue
        f = loss[c.iy][c.ix]
        if all(f < loss[c.iy + dy][c.ix + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
               if (dx, dy) != (0, 0)):
            found += 1
    return max(found - 1, 0)


def hessian_ratio(spectrum: dict) -> float:
    """Fig 7's |lambda_min / lambda_max| at the analysed point, from a spectrum analysis
    (worker/engine/geometry/hessian.py): lambda_max the top Lanczos eigenvalue, lambda_min the
    lowest Ritz value of the density's stochastic Lanczos runs (extreme Ritz values converge
    first, and every Ritz value lies inside the spectrum, so it bounds lambda_min from above);
    0 when no Ritz value is negative."""
    top = spectrum.get("top_eigenvalues") or []
    per_vector = (spectrum.get("slq") or {}).get("nodes") or []  # Ritz values per start vector
    nodes = [v for vs in per_vector for v in vs if math.isfinite(v)]
    if not top or not math.isfinite(top[0]) or not nodes:
        raise MissingData("the spectrum has no finite top eigenvalue or SLQ nodes")
    hi = max(top[0], *nodes)
    lo = min(nodes)
    if hi <= 0:
        raise MissingData("no positive eigenvalue: the ratio is undefined")
    return max(-lo, 0.0) / hi
