"""server/reproduction/surfaces.py against surfaces whose answer is known by hand: a bowl is
convex (every count 0), a saddle and a sum of sines are not, by exactly the share one counts
on paper, and non-finite losses are left out, never counted either way."""

from __future__ import annotations

import math

import pytest

from server.reproduction import MissingData
from server.reproduction import surfaces as S

XS = [-1 + 0.1 * i for i in range(21)]  # Li et al.'s [-1, 1], 21 points: h = 0.1
INTERIOR = 19 * 19


def grid(f, xs=XS, ys=XS):
    return [[f(x, y) for x in xs] for y in ys]


def disc_points(radius: float, centre: bool = True) -> int:
    """Interior grid points within `radius` of (0, 0), counted on the integer lattice."""
    r = round(radius / 0.1)
    return sum(1 for i in range(-9, 10) for j in range(-9, 10)
               if i * i + j * j <= r * r and (centre or (i, j) != (0, 0)))


def test_the_finite_difference_hessian_of_a_quadratic_is_exact():
    # f = 3x^2 + 2xy + y^2: Hessian [[6, 2], [2, 2]], eigenvalues 4 -+ sqrt(8).
    cells = S.curvature_cells(grid(lambda x, y: 3 * x * x + 2 * x * y + y * y), XS, XS)
    assert len(cells) == INTERIOR
    for c in cells:
        assert c.lo == pytest.approx(4 - math.sqrt(8), abs=1e-9)
        assert c.hi == pytest.approx(4 + math.sqrt(8), abs=1e-9)
        assert c.gx == pytest.approx(6 * c.x + 2 * c.y, abs=1e-9)


@pytest.mark.parametrize("radius", [None, 1.0, 0.5])
def test_a_bowl_reads_as_convex(radius):
    loss = grid(lambda x, y: 2.0 + x * x + 4 * y * y)
    nc = S.nonconvex_fraction(loss, XS, XS, radius)
    md = S.misdirected_fraction(loss, XS, XS, radius)
    assert nc.hits == 0 and nc.fraction == 0
    assert md.hits == 0 and md.fraction == 0
    assert S.spurious_minima(loss, XS, XS, radius) == 0
    want = INTERIOR if radius is None else disc_points(radius)
    assert nc.total == want and md.total == want - 1 and nc.skipped == 0


@pytest.mark.parametrize("radius", [None, 1.0, 0.5])
def test_a_saddle_is_non_convex_everywhere(radius):
    loss = grid(lambda x, y: x * x - y * y)  # eigenvalues 2, -2: ratio 1
    nc = S.nonconvex_fraction(loss, XS, XS, radius)
    assert nc.fraction == 1
    assert nc.total == (INTERIOR if radius is None else disc_points(radius))


def test_a_saddle_points_away_from_the_centre_where_its_downhill_side_is():
    # f = x^2 - 3y^2: grad f . p = 2x^2 - 6y^2 <= 0 exactly where i^2 <= 3 j^2 (never equal
    # off the centre: 3 is not a square).
    loss = grid(lambda x, y: x * x - 3 * y * y)
    md = S.misdirected_fraction(loss, XS, XS, None)
    want = sum(1 for i in range(-9, 10) for j in range(-9, 10)
               if (i, j) != (0, 0) and i * i <= 3 * j * j)
    assert (md.hits, md.total) == (want, INTERIOR - 1)


def test_weak_negative_curvature_is_still_convex_looking():
    # Eigenvalues 2 and -0.1: |lambda_min / lambda_max| = 0.05 < NEG_RATIO ("near zero
    # relative to the positive"); -0.4 gives 0.2 > NEG_RATIO.
    assert S.nonconvex_fraction(grid(lambda x, y: x * x - 0.05 * y * y), XS, XS).hits == 0
    assert S.nonconvex_fraction(grid(lambda x, y: x * x - 0.2 * y * y), XS, XS).fraction == 1


def test_a_sum_of_sines_is_non_convex_by_the_share_counted_by_hand():
    # f = sin(5 pi x + pi/4) + sin(5 pi y + pi/4): a quarter period per grid step, so the
    # second difference along x is -2 sin(.)/h^2 and the cross difference 0. With
    # x_i = -1 + 0.1 i, sin(5 pi x_i + pi/4) = -sin(pi i / 2 + pi / 4), negative (positive
    # curvature) for i = 0, 1 mod 4: of the interior i = 1..19 that is 1, 4, 5, 8, 9, 12, 13,
    # 16, 17, nine. A cell is convex only when both its curvatures are positive: 9 x 9 = 81
    # of 361 (mixed signs give |ratio| = 1, both negative no positive curvature at all).
    def f(x, y):
        return math.sin(5 * math.pi * x + math.pi / 4) + math.sin(5 * math.pi * y + math.pi / 4)

    nc = S.nonconvex_fraction(grid(f), XS, XS, None)
    assert (nc.hits, nc.total) == (361 - 81, 361)


def test_a_sum_of_cosines_has_the_local_minima_counted_by_hand():
    # f = -cos(5 pi x) - cos(5 pi y): along x, -cos(5 pi x_i) = cos(pi i / 2) (5 pi x_i =
    # -5 pi + pi i / 2), the lowest (-1) at i = 2 mod 4, so strict minima at i, j in
    # {2, 6, 10, 14, 18}: 25, one of them the centre; 24 spurious. In the unit disc (10 grid
    # steps): offsets (4a, 4b) with a^2 + b^2 <= 6.25: a^2 + b^2 = 0 (1 point), 1 (4), 2 (4),
    # 4 (4), 5 (8): 21 minima, 20 spurious.
    def f(x, y):
        return -math.cos(5 * math.pi * x) - math.cos(5 * math.pi * y)

    assert S.spurious_minima(grid(f), XS, XS, None) == 24
    assert S.spurious_minima(grid(f), XS, XS, 1.0) == 20


def test_non_finite_losses_are_left_out_and_reported():
    loss = grid(lambda x, y: x * x + y * y)
    loss[10][14] = math.inf  # x = 0.4, y = 0: the 9 stencils around it are skipped
    loss[3][3] = math.nan  # x = y = -0.7: 9 more
    nc = S.nonconvex_fraction(loss, XS, XS, None)
    assert (nc.hits, nc.skipped, nc.total) == (0, 9 + 9, INTERIOR - 18)
    md = S.misdirected_fraction(loss, XS, XS, None)
    assert (md.hits, md.skipped) == (0, 18)
    assert S.spurious_minima(loss, XS, XS, None) == 0


def test_a_disc_with_no_finite_cell_cannot_be_judged():
    loss = [[math.inf] * 21 for _ in range(21)]
    nc = S.nonconvex_fraction(loss, XS, XS)
    assert nc.total == 0 and nc.skipped == disc_points(1.0)
    with pytest.raises(MissingData):
        _ = nc.fraction


def test_rounding_sized_wiggles_on_a_plateau_are_not_negative_curvature():
    # A plateau at 2.3 with float32-sized noise (1 part in 1e7): flat, not non-convex.
    wiggle = [[2.3 * (1 + 1e-7 * math.sin(97 * i + 31 * j)) for i in range(21)]
              for j in range(21)]
    assert S.nonconvex_fraction(wiggle, XS, XS).hits == 0
    # The same pattern a thousand times larger is real curvature, and is counted.
    bumpy = [[2.3 * (1 + 1e-4 * math.sin(97 * i + 31 * j)) for i in range(21)]
             for j in range(21)]
    assert S.nonconvex_fraction(bumpy, XS, XS).hits > 0


def test_a_grid_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="rows"):
        S.curvature_cells([[0.0] * 21] * 20, XS, XS)


def test_hessian_ratio_reads_the_lowest_ritz_value_against_the_top_eigenvalue():
    spectrum = {"top_eigenvalues": [10.0, 4.0], "slq": {"nodes": [[-0.5, 0.1, 9.0],
                                                                  [-2.0, 3.0, 9.9]]}}
    assert S.hessian_ratio(spectrum) == pytest.approx(0.2)
    positive = {"top_eigenvalues": [10.0], "slq": {"nodes": [[0.01, 5.0]]}}
    assert S.hessian_ratio(positive) == 0.0
    with pytest.raises(MissingData):
        S.hessian_ratio({"top_eigenvalues": [math.nan], "slq": {"nodes": [[1.0]]}})
