"""Every figure carries its title in its layout (webapp/figures/__init__.py TITLES, placed by
webapp/style.py figure_title), so every PNG or SVG made of it says what it shows: the
single view, the view by seed group and the Reproduction page all lay figures out through
FIGURES. Checked on the figure dicts, on what the compare view sends for an experiment of
seed groups (the real API), and on the SVG plotly.js exports in chromium."""

from __future__ import annotations

import json

import pytest

from tests.support.seeded import seeded_experiment
from tests.webapp.test_assets import BUNDLE
from webapp import figures
from webapp.compare import update as ctl
from webapp.compare.layout import SECTIONS
from webapp.figures import FIGURES, TITLES, Frame, Options

SMALL = {"probes": {"landscape": {"every": 5}, "ics": {"every": 5, "layers": [3, 5]},
                    "activations": {"every": 10}, "sharpness": {"every": 20}}}


def _title(fig: dict) -> str | None:
    return ((fig.get("layout") or {}).get("title") or {}).get("text")


def test_the_titles_are_the_compare_cards_titles():
    assert {name: title for name, title, *_ in SECTIONS} == TITLES


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_carries_its_title(views, name):
    opts = Options(layer=2, scope="unit")
    fig = figures.build_dict(name, views, Frame(), opts)
    assert _title(fig) == figures.title_of(name, opts)
    assert _title(fig).startswith(TITLES[name])
    # The activation figures say which layer they show: on the page a control says it.
    if name.startswith("dist_"):
        assert _title(fig).endswith("sampled unit of layer 2")


def test_the_compare_view_sends_every_figure_titled_by_seed_group_and_not(api):
    exp, _ = seeded_experiment(api.engine, steps=30, spec_changes=SMALL)
    for group in (True, False):
        r = ctl.update(api.client, ctl.FULL, {"experiment": exp}, None,
                       ctl.Controls(group=group))
        assert r.state["derived"] is group  # grouped: drawn from the groups' statistics
        sent = {n: f for n, f in r.figures.items() if isinstance(f, dict)}
        assert set(sent) == set(FIGURES)
        assert {n: _title(f) for n, f in sent.items()} == {
            n: figures.title_of(n, Options()) for n in sent}


# The title in an exported SVG, and where it stands in the figure: clear of the legend and
# of every subplot.
EXPORT = """(fig) => {
  const gd = document.getElementById('plot');
  return Plotly.newPlot(gd, fig.data, fig.layout).then(() => {
    const box = el => { const r = el.getBoundingClientRect();
                        return {x0: r.left, x1: r.right, y0: r.top, y1: r.bottom}; };
    const title = gd.querySelector('.gtitle');
    const legend = gd.querySelector('.legend .bg');
    const plots = Array.from(gd.querySelectorAll('.draglayer .nsewdrag')).map(box);
    return Plotly.toImage(gd, {format: 'svg', width: gd.offsetWidth, height: fig.layout.height})
      .then(url => ({svg: decodeURIComponent(url.split(',')[1]),
                     title: title && box(title), legend: legend && box(legend), plots}));
  });
}"""


def _apart(a: dict, b: dict) -> bool:
    return a["x1"] <= b["x0"] or b["x1"] <= a["x0"] or a["y1"] <= b["y0"] or b["y1"] <= a["y0"]


def test_an_exported_svg_carries_the_title_clear_of_legend_and_plots(browser, views):
    page = browser.new_page(viewport={"width": 1330, "height": 900})
    try:
        page.set_content('<div id="plot" style="width:1290px"></div>')
        page.add_script_tag(path=str(BUNDLE))
        for name in FIGURES:
            fig = figures.build_dict(name, views, Frame(), Options())
            got = page.evaluate(EXPORT, json.loads(json.dumps(fig)))
            title = figures.title_of(name, Options())
            assert f">{title}</text>" in got["svg"], name
            assert got["title"] is not None and got["plots"], name
            if got["legend"]:
                assert _apart(got["title"], got["legend"]), (name, got)
            assert all(_apart(got["title"], p) for p in got["plots"]), (name, got)
    finally:
        page.close()
