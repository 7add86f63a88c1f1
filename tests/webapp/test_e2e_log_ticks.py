"""Log axes as plotly.js draws them in chromium, over data spanning from a third of a decade to
eight: no two tick labels overlap, and every label reads as the value at its place on the
axis (0.5, never a bare 5 below the 1). No server: the bundled plotly.js draws the figure
dicts the compare page sends, at the page's width, for the figures whose y axes start log
(ICS, a grid of short cells; Fig 11, log x and y) and a one-axis figure (beta)."""

from __future__ import annotations

import json
import math

import pytest

from tests.webapp.test_assets import BUNDLE
from webapp import figures
from webapp.client import EtaRecord, Series
from webapp.figures import Frame, Options

WIDTH = 1290  # a figure's width in a compare card on a 1440-px-wide window
SPANS = [0.3, 0.9, 1.2, 1.5, 2.0, 2.5, 4.0, 8.0]  # decades the data spans
LOWEST = -1.3  # log10 of the smallest value: the data crosses 1 (and 0.1) as the page's do

# Per shown log axis: its tick labels' text, box, and where the axis puts the value each
# label reads as (NaN when it does not read as a number).
TICKS = """(fig) => {
  const gd = document.getElementById('plot');
  return Plotly.newPlot(gd, fig.data, fig.layout, {staticPlot: true}).then(() => {
    const out = {};
    const box = gd.getBoundingClientRect();
    for (const k of Object.keys(gd._fullLayout).filter(k => /^[xy]axis\\d*$/.test(k))) {
      const ax = gd._fullLayout[k];
      if (ax.type !== 'log' || !ax.showticklabels) continue;
      out[k] = Array.from(gd.querySelectorAll('g.' + ax._id + 'tick text'))
        .filter(t => t.textContent.trim())
        .map(t => {
          const r = t.getBoundingClientRect();
          const v = Number(t.textContent.replace('\\u2212', '-'));
          const at = v > 0 ? ax._offset + ax.l2p(Math.log10(v)) : NaN;
          return {text: t.textContent, x0: r.left - box.left, x1: r.right - box.left,
                  y0: r.top - box.top, y1: r.bottom - box.top,
                  at: at, mid: k[0] === 'y' ? (r.top + r.bottom) / 2 - box.top
                                            : (r.left + r.right) / 2 - box.left};
        });
    }
    return out;
  });
}"""


def geometric(span: float, n: int = 12) -> list[float]:
    return [10 ** (LOWEST + span * i / (n - 1)) for i in range(n)]


def _ics_frame(span: float) -> Frame:
    steps = list(range(0, 120, 10))
    values = geometric(span, len(steps))
    keys = ("ics/L2/l2", "ics/L3/l2")
    return Frame(metrics={rid: {k: Series(k, steps, values[::1 if rid == 1 else -1])
                                for k in keys} for rid in (1, 2)})


def _etas_frame(span: float) -> Frame:
    # eta over `span` decades too: Fig 11's x axis is always log.
    etas = [10 ** (-span + span * i / 5) for i in range(6)]
    d = geometric(span, 6)
    return Frame(etas={rid: [EtaRecord(t, e / 0.1, e, 1.0, v * (1 + t / 100))
                             for t in (0, 50) for e, v in zip(etas, d, strict=True)]
                       for rid in (1, 2)})


def _beta_frame(span: float) -> Frame:
    steps = list(range(0, 100, 5))
    values = geometric(span, len(steps))
    return Frame(metrics={rid: {"landscape/beta": Series("landscape/beta", steps, values)}
                          for rid in (1, 2)})


FRAMES = {"ics": _ics_frame, "etas": _etas_frame, "beta": _beta_frame}


def _overlapping(a: dict, b: dict) -> bool:
    return a["x0"] < b["x1"] - 1 and b["x0"] < a["x1"] - 1 and a["y0"] < b["y1"] - 1 \
        and b["y0"] < a["y1"] - 1


@pytest.mark.parametrize("name", list(FRAMES))
def test_log_tick_labels_never_overlap_and_read_as_their_values(browser, views, name):
    page = browser.new_page(viewport={"width": WIDTH + 40, "height": 900})
    try:
        page.set_content(f'<div id="plot" style="width:{WIDTH}px"></div>')
        page.add_script_tag(path=str(BUNDLE))
        for span in SPANS:
            fig = figures.build_dict(name, views, FRAMES[name](span),
                                     Options(log=frozenset({name})))
            axes = page.evaluate(TICKS, json.loads(json.dumps(fig)))
            assert axes, (name, span)
            for ax, labels in axes.items():
                where = (name, span, ax, [lab["text"] for lab in labels])
                assert len(labels) >= 2, where  # an axis with one label says no scale
                for i, a in enumerate(labels):
                    # The label names the value the axis puts where the label stands.
                    assert not math.isnan(a["at"]), where
                    assert abs(a["mid"] - a["at"]) < 4, (where, a)
                    for b in labels[i + 1:]:
                        assert not _overlapping(a, b), (where, a["text"], b["text"])
    finally:
        page.close()
