"""The seed-group traces drawn by plotly.js in chromium: a band with a gap is two closed
shapes (fill='toself' closes each stretch between None on its own), a probe band is the
envelope and the band of the medians, and the smoothed centre lies over the faint raw one.
No server: the bundled plotly.js draws the traces webapp/figures/groups.py builds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import plotly

from tests.webapp.test_figures_groups import series
from webapp.figures.groups import band_traces, group_traces

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
NAN = math.nan

# Per fill path of the plot: how many closed shapes (subpaths ending in Z) it holds.
FILLS = """() => Array.from(document.querySelectorAll('#plot .scatterlayer .js-fill'))
  .map(p => (p.getAttribute('d') || '').split('Z').length - 1)"""
LINES = """() => Array.from(document.querySelectorAll('#plot .scatterlayer .trace'))
  .map(g => { const l = g.querySelector('.js-line');
              return l ? getComputedStyle(g).opacity : null; })"""


def draw(browser, traces) -> object:
    page = browser.new_page(viewport={"width": 800, "height": 500})
    page.set_content('<div id="plot" style="width:780px;height:480px"></div>')
    page.add_script_tag(path=str(PLOTLY_JS))
    page.evaluate("(fig) => Plotly.newPlot('plot', fig.data, {}, {staticPlot: true})",
                  json.loads(json.dumps({"data": traces}, allow_nan=False)))
    return page


def test_a_band_with_a_gap_is_two_closed_shapes_under_the_lines(browser):
    gs = series(center=[2.0, 1.8, NAN, 1.3, 1.2, 1.0], lo=[1.8, 1.6, NAN, 1.1, 1.0, 0.8],
                hi=[2.3, 2.0, NAN, 1.6, 1.5, 1.2], n=[3, 3, 0, 3, 3, 3], bad=[0, 0, 3, 0, 0, 0])
    traces = group_traces(gs, x=None, name="g", color="#1f77b4", smooth=0.6,
                          legendgroup="g", showlegend=True)
    page = draw(browser, traces)
    try:
        assert page.evaluate(FILLS) == [2]  # one fill trace, two stretches, both closed
        # Drawn in order: the band (its edge has width 0), the raw centre faint beneath the
        # smoothed one, then the markers (no line).
        assert page.evaluate(LINES) == ["1", "0.3", "1", None]
    finally:
        page.close()


def test_a_probe_band_draws_envelope_and_band_of_medians(browser):
    lo = series("landscape/loss_min")
    hi = series("landscape/loss_max", center=[c + 1 for c in lo.center])
    page = draw(browser, band_traces(lo, hi, x=None, name="g", color="#1f77b4",
                                     legendgroup="g", showlegend=True))
    try:
        assert page.evaluate(FILLS) == [1, 1]
    finally:
        page.close()
