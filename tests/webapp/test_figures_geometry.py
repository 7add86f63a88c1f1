"""Landscape figure builders (webapp/figures/geometry*.py) on analysis JSON of the contract's
shape: one colour range across runs, the BN mode and norm in every title, non-finite strings
and nulls drawn as gaps (with markers for the non-finite ones), the log colour option stated
on the colour bar, the density on a log axis, the trajectory's variance-titled axes."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import pytest

from tests.webapp.landscape_data import analysis_json, bowl, spectrum_values
from webapp.figures.geometry import Grid, all_grids, bn_text, shared_range, step_data
from webapp.figures.geometry_spectrum import density_figure, spectrum_over_training
from webapp.figures.geometry_surface import (
    bilinear,
    contour_figure,
    slices_figure,
    surface_figure,
    trajectory_figure,
)


@pytest.fixture
def pair():
    """Run 1 (no norm) sharp, run 2 (BN) flat: their ranges differ by a factor of ~10."""
    return [analysis_json(11, 1, scale=10.0), analysis_json(12, 2, scale=1.0)]


def title_text(fig: go.Figure) -> str:
    return fig.layout.title.text


def test_contour_and_surface_share_one_colour_range_across_runs(views, pair):
    rng = shared_range(all_grids(pair))
    lo, hi = rng
    # min and max over both runs' values: the flat run's minimum, the sharp run's maximum
    assert lo == pytest.approx(bowl(0, 0, 1.0, 100))
    assert hi == pytest.approx(bowl(1, 1, 10.0, 100))
    for view, a in zip(views, pair, strict=True):
        c = contour_figure(a, view, None, rng)
        s = surface_figure(a, view, None, rng)
        assert (c.data[0].zmin, c.data[0].zmax) == (lo, hi) and c.data[0].zauto is False
        assert (c.data[0].contours.start, c.data[0].contours.end) == (lo, hi)
        assert (s.data[0].cmin, s.data[0].cmax) == (lo, hi)
        assert tuple(s.layout.scene.zaxis.range) == (lo, hi)
        # z is the closed form at every grid point, row-major (iy, ix)
        x, y = list(c.data[0].x), list(c.data[0].y)
        scale = 10.0 if view.norm == "none" else 1.0
        assert c.data[0].z[1][3] == pytest.approx(bowl(x[3], y[1], scale, 100))


@pytest.mark.parametrize("bn,text", [("batch", "BN mode: batch statistics"),
                                     ("running", "BN mode: running statistics"),
                                     ("recalibrated", "BN mode: recalibrated statistics")])
def test_every_figure_title_states_the_bn_mode_and_the_norm(views, bn, text):
    surf = [analysis_json(11, 1, bn_mode=bn), analysis_json(12, 2, bn_mode=bn)]
    spec = [analysis_json(21, 1, kind="spectrum", bn_mode=bn,
                          values={100: spectrum_values([3.0, 2.0], 5.0, 0.1)})]
    traj = analysis_json(31, 1, kind="trajectory", bn_mode=bn)
    slices = [analysis_json(41, 1, kind="slice", bn_mode=bn)]
    rng = shared_range(all_grids(surf))
    figs = [contour_figure(surf[0], views[0], None, rng),
            surface_figure(surf[0], views[0], None, rng),
            trajectory_figure(traj, views[0], rng),
            slices_figure(list(zip(views, slices, strict=False)), None),
            density_figure(list(zip(views, spec, strict=False)), None),
            spectrum_over_training(list(zip(views, spec, strict=False)))]
    for fig in figs:
        assert text in title_text(fig)
        assert "none" in title_text(fig)  # run 1's norm
    assert bn_text(bn) in title_text(figs[0])


def test_nonfinite_strings_and_nulls_are_gaps_with_markers_for_the_nonfinite(views):
    holes = {(0, 0): "nan", (0, 1): "inf", (1, 0): "-inf", (2, 2): None, (3, 3): "NaN"}
    a = analysis_json(11, 1, holes=holes)
    grid = Grid.of(step_data(a, None))
    assert math.isnan(grid.z[0][0]) and grid.z[0][1] == math.inf and grid.z[2][2] is None
    rng = shared_range([grid])
    finite = [v for row in grid.z for v in row if v is not None and math.isfinite(v)]
    assert rng == (min(finite), max(finite))  # non-finite values never stretch the scale
    c = contour_figure(a, views[0], None, rng)
    z = c.data[0].z
    assert z[0][0] is None and z[0][1] is None and z[1][0] is None and z[2][2] is None
    assert c.data[0].connectgaps is False
    marks = c.data[1]
    x = list(c.data[0].x)
    # NaN, +inf, -inf and "NaN" are marked where they are; the missing point is not a value
    assert sorted(zip(marks.x, marks.y, strict=True)) == sorted(
        [(x[0], x[0]), (x[1], x[0]), (x[0], x[1]), (x[3], x[3])])
    assert sorted(marks.marker.symbol) == sorted(["x", "triangle-up", "triangle-down", "x"])
    assert "24/25 points computed" in title_text(c)  # one point not computed yet
    s = surface_figure(a, views[0], None, rng)
    assert s.data[0].z[0][0] is None and s.data[1].type == "scatter3d"
    sl = slices_figure([(views[0], analysis_json(41, 1, kind="slice", holes={(0, 1): "-inf",
                                                                          (0, 2): None}))],
                       None)
    assert sl.data[0].y[1] is None and sl.data[0].y[2] is None
    assert list(sl.data[1].text) == ["-inf"] and list(sl.data[1].marker.symbol) == [
        "triangle-down"]


def test_an_analysis_with_nothing_yet_gives_an_empty_titled_figure(views):
    a = analysis_json(11, 1)
    a["steps"] = {}
    for fig in (contour_figure(a, views[0], None, None), surface_figure(a, views[0], None,
                                                                         None)):
        assert fig.data == () and "BN mode" in title_text(fig)
    assert shared_range(all_grids([a])) is None


def test_log_colour_is_log10_of_the_loss_and_says_so_on_the_colour_bar(views, pair):
    rng = shared_range(all_grids(pair), log=True)
    assert rng == pytest.approx((math.log10(bowl(0, 0, 1.0, 100)),
                                 math.log10(bowl(1, 1, 10.0, 100))))
    c = contour_figure(pair[0], views[0], None, rng, log=True)
    assert c.data[0].colorbar.title.text == "log₁₀ loss"
    x, y = list(c.data[0].x), list(c.data[0].y)
    assert c.data[0].z[4][4] == pytest.approx(math.log10(bowl(x[4], y[4], 10.0, 100)))
    assert contour_figure(pair[0], views[0], None, rng).data[0].colorbar.title.text == "loss"
    s = surface_figure(pair[0], views[0], None, rng, log=True)
    assert s.data[0].colorbar.title.text == "log₁₀ loss"
    assert s.layout.scene.zaxis.title.text == "log₁₀ loss"
    # A value that has no logarithm (<= 0) is a gap, not an error.
    neg = analysis_json(11, 1, holes={(0, 0): -1.0, (0, 1): 0.0})
    z = contour_figure(neg, views[0], None, None, log=True).data[0].z
    assert z[0][0] is None and z[0][1] is None


def test_surfaces_take_the_shared_camera(views, pair):
    cam = {"eye": {"x": 2.0, "y": 0.1, "z": 0.5}}
    fig = surface_figure(pair[0], views[0], None, None, camera=cam)
    assert fig.layout.scene.camera.eye.x == 2.0


def test_step_selection_picks_the_step_or_the_nearest_before(views):
    a = analysis_json(11, 1, steps=(0, 100, 200))
    for asked, got in ((100, 100), (150, 100), (None, 200), (-5, 0)):
        assert f"step {got}" in title_text(contour_figure(a, views[0], asked, None)), asked


def test_slices_overlay_runs_in_their_norm_colours_with_a_barrier(views):
    a1 = analysis_json(41, 1, kind="slice", scale=10.0, points=7)
    a2 = analysis_json(42, 2, kind="slice", scale=1.0, points=7, directions="interpolation",
                       values={100: {"endpoints": {"barrier": 0.25}}})
    fig = slices_figure(list(zip(views, [a1, a2], strict=True)), None)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.line.color for t in lines] == [v.color for v in views]
    assert "barrier 0.25" in lines[1].name and "barrier" not in lines[0].name
    assert list(lines[0].y) == pytest.approx([bowl(x, 0.0, 10.0, 100) for x in lines[0].x])
    assert "norms: none, batch" in title_text(fig)
    log = slices_figure(list(zip(views, [a1, a2], strict=True)), None, log=True)
    assert log.layout.yaxis.title.text == "log₁₀ loss"


def test_bilinear_is_exact_on_a_plane_and_none_outside_or_at_a_hole():
    xs, ys = [0.0, 0.5, 1.0], [-1.0, 1.0]
    plane = [[2 * x - 3 * y + 1 for x in xs] for y in ys]
    g = Grid(xs, ys, plane)
    for a, b in ((0.2, 0.3), (0.75, -0.9), (1.0, 1.0), (0.0, -1.0)):
        assert bilinear(g, a, b) == pytest.approx(2 * a - 3 * b + 1, rel=1e-12)
    assert bilinear(g, 1.5, 0.0) is None
    g.z[0][0] = math.nan
    assert bilinear(g, 0.1, -0.5) is None and bilinear(g, 0.9, 0.0) is not None


def test_trajectory_is_a_path_on_its_contour_with_variance_titles_and_true_losses(views):
    traj = {"trajectory": {"steps": [0, 50, 100], "coords": [[0.8, 0.4], [0.3, "nan"],
                                                              [0.0, 0.0]],
                           "loss": [2.5, "inf", 0.3], "explained_variance": [0.9, 0.0625]}}
    a = analysis_json(31, 1, kind="trajectory", values={100: traj})
    fig = trajectory_figure(a, views[0], None)
    assert fig.data[0].type == "contour"
    path = next(t for t in fig.data if t.name == "trajectory")
    assert path.mode == "lines+markers"
    assert list(path.x) == [0.8, 0.3, 0.0] and list(path.y) == [0.4, None, 0.0]
    assert fig.layout.xaxis.title.text == "PC1 (90.0 % of variance)"
    assert fig.layout.yaxis.title.text == "PC2 (6.2 % of variance)"
    assert "true loss 2.5" in path.text[0] and "true loss +inf" in path.text[1]
    # the surface value there: the grid interpolated at the snapshot's coordinates
    assert f"surface there {bilinear(Grid.of(step_data(a, None)), 0.8, 0.4):.4g}" in path.text[0]
    assert "surface there —" in path.text[1]
    # the engine's own evaluation of the plane at each snapshot, when it sent one
    traj["trajectory"]["surface_loss"] = [2.25, "nan", 0.125]
    path = next(t for t in trajectory_figure(a, views[0], None).data if t.name == "trajectory")
    assert "surface there 2.25" in path.text[0] and "surface there NaN" in path.text[1]


def test_a_grid_with_no_point_yet_or_no_finite_value_is_a_titled_empty_figure(views):
    everything = {(iy, ix): None for iy in range(5) for ix in range(5)}
    empty = analysis_json(11, 1, holes=everything)
    for fig in (contour_figure(empty, views[0], None, None),
                surface_figure(empty, views[0], None, None)):
        assert fig.data == () and "no point computed yet" in fig.layout.annotations[0].text
    nans = analysis_json(11, 1, holes={k: "nan" for k in everything})
    contour = contour_figure(nans, views[0], None, None)
    assert len(contour.data[1].x) == 25  # every NaN marked
    assert surface_figure(nans, views[0], None, None).data == ()  # WebGL has nothing to draw


def test_density_overlay_is_on_a_log_axis_with_zeros_as_gaps(views):
    a1 = analysis_json(21, 1, kind="spectrum",
                       values={100: spectrum_values([40.0, 9.0], 60.0, 2.0)})
    a2 = analysis_json(22, 2, kind="spectrum", bn_mode="batch",
                       values={100: spectrum_values([4.0, 3.0], 10.0, 0.5,
                                                    density=([0, 1, 2], [0.2, "nan", 0.7]))})
    fig = density_figure(list(zip(views, [a1, a2], strict=True)), None)
    assert fig.layout.yaxis.type == "log"
    assert [t.line.color for t in fig.data] == [v.color for v in views]
    assert list(fig.data[0].y) == [0.5, None, 0.25, 1e-3]  # 0 has no place on a log axis
    assert list(fig.data[1].y) == [0.2, None, 0.7]
    assert "λ₁ 40" in fig.data[0].name and "tr 60" in fig.data[0].name
    assert "norms: none, batch" in title_text(fig)
    # the axis shows eight decades under the highest peak (broadening tails go far lower)
    assert tuple(fig.layout.yaxis.range) == pytest.approx((math.log10(0.7) - 8,
                                                           math.log10(0.7) + 0.3))


def test_topk_and_trace_over_training_with_standard_error_bars(views):
    vals = {0: spectrum_values([5.0, 2.0, 1.0], 9.0, 0.3, share=0.2),
            100: spectrum_values([50.0, "inf", 1.0], "nan", 1.5, share=0.9)}
    a = analysis_json(21, 1, kind="spectrum", steps=(0, 100), values=vals)
    fig = spectrum_over_training([(views[0], a)])
    eig = [t for t in fig.data if t.yaxis == "y"]
    assert len(eig) == 3 and [t.showlegend for t in eig] == [True, False, False]
    assert list(eig[0].x) == [0, 100] and list(eig[0].y) == [5.0, 50.0]
    assert list(eig[1].y) == [2.0, None]  # a non-finite eigenvalue is a gap
    tr = next(t for t in fig.data if t.yaxis == "y2")
    assert list(tr.y) == [9.0, None]
    assert list(tr.error_y.array) == [0.3, 1.5] and tr.error_y.visible
    assert "gradient share in top-3: 0.9" in tr.text[1]


def test_every_builder_gives_valid_plotly_json(views, pair):
    # go.Figure(dict) validates each attribute; the round trip catches a bad key.
    rng = shared_range(all_grids(pair))
    for fig in (contour_figure(pair[0], views[0], None, rng),
                surface_figure(pair[1], views[1], None, rng)):
        assert go.Figure(fig.to_dict()).to_dict() == fig.to_dict()


def test_accuracy_grids_on_their_own_shared_scale_and_a_missing_metric_said(views, pair):
    for a in pair:  # accuracy falling with the loss: 1 / (1 + loss)
        data = a["steps"]["100"]
        data["acc"] = [[1 / (1 + v) for v in row] for row in data["loss"]]
    rng = shared_range(all_grids(pair, "acc"))
    assert rng == pytest.approx((1 / (1 + bowl(1, 1, 10.0, 100)), 1 / (1 + bowl(0, 0, 1.0, 100))))
    c = contour_figure(pair[0], views[0], None, rng, metric="acc")
    assert c.data[0].colorbar.title.text == "accuracy" and c.data[0].zmax == rng[1]
    assert title_text(c).startswith("accuracy contour")
    pair[1]["steps"]["100"]["acc"] = None  # a regression run measures no accuracy
    s = surface_figure(pair[1], views[1], None, rng, metric="acc")
    assert s.data == () and s.layout.annotations[0].text == "accuracy not measured by this " \
        "analysis"
