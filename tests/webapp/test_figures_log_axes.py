"""Every log axis the figures draw is ticked and labelled one way (webapp/figures/axes.py
LOG_AXIS): about three ticks' worth of spacing, so plotly never ticks every digit, and each
label the tick's value. Built log, toggled log by the page's Patch, or toggled back to linear,
an axis ends up the same. How plotly.js then draws them over many spans:
tests/webapp/test_e2e_log_ticks.py."""

from __future__ import annotations

import pytest

from webapp import figures
from webapp.figures import FIGURES, Frame, Options
from webapp.figures.axes import LINEAR_AXIS, LOG_AXIS

LOG_FIGURES = [n for n, spec in FIGURES.items() if spec([], Options()).log_axes]


def _axes(fig: dict, names: list[str]) -> dict[str, dict]:
    return {ax: {k: fig["layout"][ax].get(k) for k in LOG_AXIS} for ax in names}


def test_the_figures_with_a_log_toggle_are_the_ones_the_page_offers():
    assert set(LOG_FIGURES) == {"training", "landscape", "gradpred", "beta", "etas", "ics",
                                "sharpness", "dynamics"}


@pytest.mark.parametrize("name", LOG_FIGURES)
@pytest.mark.parametrize("arrange", ["side", "overlay"])
def test_log_axes_are_ticked_sparsely_and_labelled_with_values(views, name, arrange):
    axes = FIGURES[name](views, Options(arrange=arrange)).log_axes
    on = figures.build_dict(name, views, Frame(), Options(arrange=arrange,
                                                          log=frozenset({name})))
    assert _axes(on, axes) == {ax: LOG_AXIS for ax in axes}
    off = figures.build_dict(name, views, Frame(), Options(arrange=arrange))
    assert _axes(off, axes) == {ax: LINEAR_AXIS for ax in axes}


def test_fig11_step_size_axes_are_log_axes_like_every_other(views):
    fig = figures.build_dict("etas", views, Frame(), Options())
    xs = [k for k in fig["layout"] if k.startswith("xaxis")]
    assert len(xs) == 2
    assert _axes(fig, xs) == {ax: LOG_AXIS for ax in xs}
    assert all("exponentformat" not in fig["layout"][ax] for ax in xs)


@pytest.mark.parametrize("name", LOG_FIGURES)
def test_toggling_log_ends_where_a_rebuild_starts(views, name, apply_patch):
    """The page toggles log with a Patch (figures.relog): on and off again, each axis
    ends up as a figure built that way, nothing left of the other."""
    lin, log = Options(), Options(log=frozenset({name}))
    built_lin = figures.build_dict(name, views, Frame(), lin)
    built_log = figures.build_dict(name, views, Frame(), log)
    to_log = apply_patch(built_lin, figures.relog(name, views, log))
    assert to_log["layout"] == built_log["layout"]
    back = apply_patch(to_log, figures.relog(name, views, lin))
    assert back["layout"] == built_lin["layout"]


@pytest.mark.parametrize("name", ["training", "ics", "dist_overlay"])
def test_the_compare_view_s_log_x_is_a_log_axis_like_every_other(views, name):
    from webapp.compare.transform import XAxis, apply_view

    fig = apply_view(name, figures.build_dict(name, views, Frame(), Options()), x=XAxis(),
                     logx=True)
    xs = [k for k in fig["layout"] if k.startswith("xaxis")]
    assert xs and _axes(fig, xs) == {ax: LOG_AXIS for ax in xs}
