"""End to end in headless Debian chromium: a permalink of the compare view. `landscope api`
serves an experiment of three seeds per normalisation (synthetic runs written into its
database); a link with seed groups, centre, band, smoothing, log x, log y, a zoomed range and
the figures shown opens exactly that view; zooming one figure zooms every step figure and
puts the range in the URL; the copied link is the URL and reopens the same zoom; a figure's
CSV button downloads what it draws.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from server.db.migrate import upgrade
from server.db.session import make_engine
from tests.support.seeded import seeded_experiment
from tests.support.served import landscope_server

pytestmark = pytest.mark.slow

STEPS = 300
SMALL = {"probes": {"landscape": {"every": 10}, "ics": {"every": 10, "layers": [3, 5]},
                    "activations": {"every": 50}, "sharpness": {"every": 50}}}
STEP_FIGS = ("training", "landscape", "beta", "dynamics")
# Every shown step figure's x axes: their type and range, as drawn.
AXES = """(names) => names.map(n => {
  const gd = document.querySelector('#fig-' + n + ' .js-plotly-plot');
  if (!gd || !gd._fullLayout) return null;
  return Object.keys(gd._fullLayout).filter(k => /^xaxis\\d*$/.test(k))
    .map(k => [gd._fullLayout[k].type, gd._fullLayout[k].range]);
})"""
TRACES = """(n) => {
  const gd = document.querySelector('#fig-' + n + ' .js-plotly-plot');
  return gd && gd.data ? gd.data.map(t => ({name: t.name, group: t.legendgroup || '',
    fill: t.fill || '', n: (t.x || []).length})) : null;
}"""


def _ranges(page) -> dict[str, list]:
    axes = page.evaluate(AXES, list(STEP_FIGS))
    return {n: a for n, a in zip(STEP_FIGS, axes, strict=True)}


def _checked(page, selector: str) -> bool:
    return page.locator(selector).is_checked()


def test_a_permalink_reopens_the_view_zoom_follows_and_the_link_copies(browser, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'landscope.db'}"
    upgrade(url)
    engine = make_engine(url)
    exp, _groups = seeded_experiment(engine, steps=STEPS, spec_changes=SMALL)
    engine.dispose()
    with landscope_server("api", tmp_path) as base:
        ctx = browser.new_context(viewport={"width": 1440, "height": 1000},
                                  accept_downloads=True,
                                  permissions=["clipboard-read", "clipboard-write"])
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: errors.append(f"console: {m.text}")
                if m.type == "error" else None)
        try:
            # -- a page that merely opens keeps its address (it chose grouping itself)
            page.goto(f"{base}/experiments/{exp}")
            page.wait_for_selector("#fig-dynamics .js-plotly-plot", timeout=120_000)
            assert _checked(page, "#cmp-group input[value=on]")
            page.wait_for_timeout(1500)
            assert page.url == f"{base}/experiments/{exp}"

            link = (f"{base}/experiments/{exp}?group=1&center=mean&band=std&smooth=0.6"
                    "&logx=1&logy=training&range=10,200&figs=training,landscape,beta,dynamics")
            page.goto(link)
            page.wait_for_selector("#fig-dynamics .js-plotly-plot", timeout=120_000)

            # -- the controls show the link's view
            assert _checked(page, "#cmp-group input[value=on]")
            assert _checked(page, "#cmp-center input[value=mean]")
            assert _checked(page, "#cmp-band input[value=std]")
            assert _checked(page, "#cmp-logx input[value=on]")
            assert not _checked(page, "#cmp-single input[value=on]")
            assert _checked(page, "#cmp-log input[value=training]")
            assert not _checked(page, "#cmp-log input[value=ics]")
            assert page.locator("#cmp-smooth [role=slider]").first.get_attribute(
                "aria-valuenow") == "0.6"
            assert page.locator("#cmp-x").inner_text().strip() == "step"
            for name in ("ics", "etas", "gradpred"):
                assert page.locator(f"#section-{name}").is_hidden(), name
            for name in STEP_FIGS:
                assert page.locator(f"#section-{name}").is_visible(), name
            assert page.url == link  # opening it left it as it was

            # -- ...and so do the figures: groups (a line and band each, smoothed over the
            # raw centre), log x zoomed to 10..200 everywhere, log y where asked
            traces = page.evaluate(TRACES, "training")
            groups = {t["group"] for t in traces if t["group"].startswith("group-")}
            assert len(groups) == 2
            assert any(t["name"].endswith("(raw)") for t in traces)
            assert any(t["fill"] for t in traces)  # the groups' bands
            for name, axes in _ranges(page).items():
                for kind, rng in axes:
                    assert kind == "log", name
                    assert rng == pytest.approx([1.0, math.log10(200)], abs=1e-6), name
            assert page.evaluate("document.querySelector('#fig-training .js-plotly-plot')"
                                 "._fullLayout.yaxis.type") == "log"
            assert page.evaluate("document.querySelector('#fig-beta .js-plotly-plot')"
                                 "._fullLayout.yaxis.type") == "linear"

            # -- zoom one figure: every step figure follows, the URL carries the range
            page.locator("#section-beta").scroll_into_view_if_needed()
            box = page.locator("#fig-beta .nsewdrag").first.bounding_box()
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + box["width"] * 0.3, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=8)
            page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=8)
            page.mouse.up()
            page.wait_for_function("() => new URL(location.href).searchParams.get('range')"
                                   " !== '10,200'", timeout=30_000)
            zoomed = _ranges(page)
            beta = zoomed["beta"][0][1]
            assert beta[0] > 1.0 + 0.1 and beta[1] < math.log10(200) - 0.1
            for name, axes in zoomed.items():
                for _kind, rng in axes:
                    assert rng == pytest.approx(beta, abs=1e-6), name
            in_url = parse_qs(urlsplit(page.url).query)["range"][0].split(",")
            assert [math.log10(float(v)) for v in in_url] == pytest.approx(beta, abs=1e-4)

            # -- copy link: the clipboard and the link text are the URL
            page.click("#cmp-copy")
            page.wait_for_function(
                "document.querySelector('#cmp-copied')?.innerText === 'copied'")
            assert page.evaluate("navigator.clipboard.readText()") == page.url
            assert page.inner_text("#cmp-link") == page.url
            copied = page.url

            # -- a figure's drawn data as CSV
            with page.expect_download(timeout=60_000) as dl:
                page.locator("#section-beta button:has-text('CSV')").click()
            text = Path(dl.value.path()).read_text()
            assert dl.value.suggested_filename == "landscope-beta.csv"
            assert text.startswith("# ") and "figure,trace,x,y,lo,hi" in text

            # -- the copied link reopens the same zoom
            page.goto(copied)
            page.wait_for_selector("#fig-dynamics .js-plotly-plot", timeout=120_000)
            for name, axes in _ranges(page).items():
                for _kind, rng in axes:
                    assert rng == pytest.approx(beta, abs=1e-4), name

            # -- another x axis: the zoom (in steps) goes; these runs recorded no dataset
            # size, so the page says so and keeps steps
            page.locator("#cmp-x").click()
            page.get_by_text("epoch", exact=True).click()
            page.wait_for_function("() => { const q = new URL(location.href).searchParams;"
                                   " return q.get('x') === 'epoch' && !q.has('range'); }",
                                   timeout=60_000)
            page.wait_for_function("document.querySelector('#cmp-notice')?.innerText"
                                   ".includes('showing training steps')", timeout=60_000)

            # -- a bad step bound is named beside the inputs, not read as "no bound"
            page.fill("#cmp-from", "-5")
            page.press("#cmp-from", "Enter")
            page.wait_for_function("document.querySelector('#cmp-steps-error')?.innerText"
                                   ".includes('whole numbers')", timeout=30_000)
            page.fill("#cmp-from", "20")
            page.press("#cmp-from", "Enter")
            page.wait_for_function("document.querySelector('#cmp-steps-error')?.innerText"
                                   " === ''", timeout=30_000)
            assert [e for e in errors if "favicon" not in e] == [], errors
        finally:
            ctx.close()
