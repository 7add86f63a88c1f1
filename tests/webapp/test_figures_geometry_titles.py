"""What the landscape figures say about themselves (webapp/figures/geometry*.py): the
evaluation set in every subtitle, the step kept when a figure has nothing to draw, whole step
ticks on the spectrum-over-training axes, and titles clear of the image's left edge."""

from __future__ import annotations

import plotly.graph_objects as go

from tests.webapp.landscape_data import analysis_json, spectrum_values
from webapp.figures.geometry import TITLE_PAD, eval_text, evals_text
from webapp.figures.geometry_spectrum import density_figure, spectrum_over_training
from webapp.figures.geometry_surface import (
    contour_figure,
    slices_figure,
    surface_figure,
    trajectory_figure,
)


def spectra(views, samples: tuple[int, int], steps=(800,)):
    vals = {s: spectrum_values([9.74, 2.0], 30.0, 1.0) for s in steps}
    return [(v, analysis_json(20 + i, v.id, kind="spectrum", steps=steps, values=vals,
                              eval_samples=n))
            for i, (v, n) in enumerate(zip(views, samples, strict=True))]


def test_every_figure_subtitle_states_the_evaluation_set(views):
    a = analysis_json(11, 1, eval_samples=512)
    for fig in (contour_figure(a, views[0], None, None),
                surface_figure(a, views[0], None, None)):
        assert "BN mode: batch statistics · eval set: 512 samples" in fig.layout.title.text
    items = spectra(views, (512, 512))
    for fig in (density_figure(items, None), spectrum_over_training(items)):
        assert fig.layout.title.text.endswith("eval set: 512 samples</sup>")
    # runs of one figure on different sets: both sizes said
    assert "eval set: 512 / 2,048 samples" in density_figure(spectra(views, (2048, 512)),
                                                              None).layout.title.text
    slices = [(v, analysis_json(30 + v.id, v.id, kind="slice", eval_samples=256))
              for v in views]
    assert "eval set: 256 samples" in slices_figure(slices, None).layout.title.text
    traj = analysis_json(41, 1, kind="trajectory", eval_samples=128, values={100: {
        "trajectory": {"steps": [0, 100], "coords": [[0.5, 0.5], [0, 0]]}}})
    assert "eval set: 128 samples" in trajectory_figure(traj, views[0], None).layout.title.text


def test_the_evaluation_set_is_the_one_measured_on():
    # the cost's count: the spec's request capped at the training set, or all of it
    assert eval_text(analysis_json(1, 1, eval_samples=None, cost={"eval_samples": 4000})) \
        == "eval set: 4,000 samples"
    assert eval_text(analysis_json(1, 1, eval_samples=None)) == \
        "eval set: the whole training set"
    assert eval_text({"spec": {}}) == "" and evals_text([{}]) == ""


def test_a_quantity_not_measured_keeps_the_step_in_the_subtitle(views):
    a = analysis_json(11, 1, steps=(100, 800))
    for build in (contour_figure, surface_figure):
        fig = build(a, views[0], 100, None, metric="test_acc")
        assert fig.data == ()
        assert fig.layout.annotations[0].text == "test accuracy not measured by this analysis"
        assert "step 100 · BN mode" in fig.layout.title.text
    nothing_yet = analysis_json(11, 1, holes={(iy, ix): None for iy in range(5)
                                              for ix in range(5)})
    assert "step 100" in contour_figure(nothing_yet, views[0], None, None).layout.title.text


def test_one_analysed_step_gets_one_whole_step_tick(views):
    fig = spectrum_over_training(spectra(views, (2048, 2048)))
    for axis in (fig.layout.xaxis, fig.layout.xaxis2):
        assert axis.tickmode == "array" and list(axis.tickvals) == [800]
        assert list(axis.ticktext) == ["800"]
    several = spectrum_over_training(spectra(views, (512, 512), steps=(0, 400, 12_000)))
    assert list(several.layout.xaxis.tickvals) == [0, 400, 12_000]
    assert list(several.layout.xaxis.ticktext) == ["0", "400", "12,000"]
    many = spectrum_over_training(spectra(views, (512, 512), steps=tuple(range(0, 1200, 100))))
    assert many.layout.xaxis.tickvals is None  # plotly's own ticks: whole steps apart


def test_titles_keep_clear_of_the_left_edge_of_an_exported_image(views):
    a = analysis_json(11, 1)
    items = spectra(views, (512, 512))
    figs = [contour_figure(a, views[0], None, None), surface_figure(a, views[0], None, None),
            slices_figure([(views[0], analysis_json(31, 1, kind="slice"))], None),
            density_figure(items, None), spectrum_over_training(items)]
    for fig in figs:
        t = fig.layout.title
        assert (t.x, t.xanchor) == (0, "left") and t.pad.l == TITLE_PAD >= 10
        # the surface has no side margins: the padding must hold in the container's frame
        assert t.xref == "container"
        assert go.Figure(fig.to_dict()).to_dict() == fig.to_dict()
