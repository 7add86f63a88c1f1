"""End to end in headless Debian chromium: the Landscape tab's launch form and what its
figures say, against `landscope api` (no worker: two finished runs with indexed snapshots are
written into its database, and the surfaces' results as the worker's sink writes them).

- a number that cannot be used (1000 or -3 grid points, 0 samples) gets an error at its
  field, typed without leaving the field; the cost panel says it cannot cost the analysis;
  Launch is refused with the field named and creates nothing; an empty field is the default
  the form states beside it;
- the cost follows typing after a short pause, focus still in the field; Launch takes what is
  typed at the click, even within that pause;
- the drawn figures name the evaluation set, keep the step when a quantity was not measured,
  and an exported contour has its title clear of the left edge.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request

import pytest
from PIL import Image

from server.db.migrate import upgrade
from server.db.session import make_engine
from tests.support.served import landscope_server
from tests.webapp.landscape_data import snapshotted_experiment, store_results

pytestmark = pytest.mark.slow

COST = "document.querySelector('#ls-cost')?.innerText || ''"
CONTOURS = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .filter(gd => gd.data && gd.data[0] && gd.data[0].type === 'contour')"""
# Each contour's title: its text and how far its left end is from the figure's left edge.
TITLES = f"""() => ({CONTOURS})().map(gd => {{
  const t = gd.querySelector('.gtitle'), svg = gd.querySelector('.main-svg');
  return {{text: gd.layout.title.text, note: ((gd.layout.annotations || [])[0] || {{}}).text || '',
          left: t.getBoundingClientRect().left - svg.getBoundingClientRect().left,
          shown: t.getBoundingClientRect().width > 0}};
}})"""
EXPORT = f"""() => window.Plotly.toImage(({CONTOURS})()[0],
  {{format: 'png', width: 600, height: 440, scale: 1}})"""


def analyses(base: str, experiment_id: int) -> list[dict]:
    with urllib.request.urlopen(f"{base}/api/v1/analyses?experiment_id={experiment_id}",
                                timeout=30) as r:
        body = json.loads(r.read())
    return body["items"] if isinstance(body, dict) else body


def wait_text(page, selector: str, text: str, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
        arg=[selector, text], timeout=timeout)


def test_bad_numbers_are_refused_the_cost_follows_typing_and_figures_say_their_set(
        browser, tmp_path, shots):
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'landscope.db'}"
    upgrade(url)
    engine = make_engine(url)
    exp, ids = snapshotted_experiment(engine)
    with landscope_server("api", tmp_path) as base:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        try:
            page.goto(f"{base}/experiments/{exp}?tab=landscape")
            wait_text(page, "#ls-cost", "882", timeout=120_000)  # 2 runs x 21 x 21

            # -- 1. numbers that cannot be used: said at the field, no cost, no launch
            for bad, said in (("1000", "not 1,000"), ("-3", "not -3")):
                page.fill("#ls-points", bad)  # typed, the field not left
                wait_text(page, "#ls-points-error", f"1 to 101 points, {said}")
                wait_text(page, "#ls-cost", f"Cannot cost this analysis. Grid points per "
                                            f"axis: 1 to 101 points, {said}")
                assert "882" not in page.evaluate(COST)
            shots(page.locator(".ls-card").first, "ls-form-bad-points")
            page.click("#ls-launch")
            wait_text(page, "#ls-message", "Not launched. Grid points per axis: 1 to 101")
            page.fill("#ls-points", "")  # empty: the default, as the hint says
            wait_text(page, "#ls-cost", "882")
            assert page.inner_text("#ls-points-error") == ""
            assert "empty: 21" in page.inner_text("#ls-points-hint")
            page.fill("#ls-samples", "0")
            wait_text(page, "#ls-samples-error", "1 to 1,000,000 samples, not 0")
            wait_text(page, "#ls-cost", "Cannot cost this analysis")
            page.click("#ls-launch")
            wait_text(page, "#ls-message", "Not launched. Evaluation samples: 1 to 1,000,000")
            assert analyses(base, exp) == []

            # -- 2. the cost follows typing; Launch takes what is typed when clicked
            page.fill("#ls-samples", "512")
            page.fill("#ls-steps", "10, 30")
            page.fill("#ls-points", "5")
            wait_text(page, "#ls-cost", "of 512 samples")
            wait_text(page, "#ls-cost", "100")  # 2 runs x 2 steps x 5 x 5, focus kept
            assert page.evaluate("document.activeElement.id") == "ls-points"
            page.fill("#ls-steps", "30")
            page.click("#ls-launch")  # within the typing pause
            wait_text(page, "#ls-message", "Launched 2 analyses")
            made = analyses(base, exp)
            assert {(tuple(a["spec"]["steps"]), a["spec"]["x"]["points"],
                     a["spec"]["eval_samples"]) for a in made} == {((30,), 5, 512)}

            # -- 3-6. the worker's results arrive: what the figures and the list say
            for a, scale in zip(sorted(made, key=lambda a: a["run_id"]), (10.0, 1.0),
                                strict=True):
                store_results(engine, a, scale)
            page.wait_for_function(f"() => ({CONTOURS})().length === 2", timeout=60_000)
            assert page.locator("#ls-list").inner_text().count("512 samples") == 2
            for t in page.evaluate(TITLES):
                assert "step 30 · BN mode: batch statistics · eval set: 512 samples" in t["text"]
                assert t["shown"], t  # on the page too: the card's heading names no run
                assert t["left"] >= 10, t  # clear of the edge, as in an exported image
            png = page.evaluate(EXPORT)
            image = Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1])))
            edge = image.convert("L").crop((0, 0, 8, 80))  # the title's rows, left edge
            assert edge.getextrema()[0] > 240, "the exported title touches the left edge"
            page.get_by_label("test accuracy").check()
            page.wait_for_function(f"() => ({TITLES})().every(t => t.note.includes("
                                   "'not measured'))", timeout=30_000)
            assert all("step 30 · BN mode" in t["text"] for t in page.evaluate(TITLES))
            shots(page, "ls-figures-test-acc", full_page=True)
            assert errors == [], errors
        finally:
            page.close()
    engine.dispose()
