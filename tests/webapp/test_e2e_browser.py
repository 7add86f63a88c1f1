"""End to end in headless Debian chromium: the real product (`landscope up`: API, dashboard,
embedded SQLite and broker, one real worker) driven through the browser. Launch a paired
experiment from the form, watch both runs' probe bands grow live on the compare page, export
a figure and a run, and see polling stop once both runs are done.

Screenshots go to the test's temporary folder, and also to LANDSCOPE_SCREENSHOT_DIR when set
(docs/screenshots/ holds the ones the README shows).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import answers as ready
from tests.support.processes import stop_group
from webapp.compare.data import MAX_POINTS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Long enough that a fast engine still takes many polls per run: at 1,500 steps a quiet AMD
# EPYC (2026-12-04) finished a run between two or three polls, and the page could show only
# two states of its bands.
STEPS, STRIDE = 6000, 20
POINTS = STEPS // STRIDE
# The x lengths of the filled band traces of a figure: one per run, in legend order.
BAND_POINTS = """(id) => {
  const gd = document.querySelector('#' + id + ' .js-plotly-plot');
  if (!gd || !gd.data) return null;
  return gd.data.filter(t => t.fill === 'tonexty').map(t => (t.x || []).length);
}"""


def serve(args: list[str], data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """A `landscope` server command on a free port; (process, base URL) once it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCOPE_")}
    env["LANDSCOPE_DATA_DIR"] = str(data_dir)
    # One torch thread: on a shared 2-core machine, OpenMP threads spin-waiting for each
    # other under contention can make a tiny model's step take seconds.
    env["OMP_NUM_THREADS"] = "1"
    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "landscope.cli", *args, "--port", "0"],
                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"dashboard\s+(http://\S+?)/\s", log.read_text())
        # The address is announced before uvicorn listens: wait for an answer too.
        if found and ready(found.group(1)):
            return proc, found.group(1)
        time.sleep(0.2)
    stop_group(proc)
    raise AssertionError(f"`landscope {args[0]}` did not start:\n{log.read_text()[-3000:]}")




# Every distinct state the landscape bands go through, sampled every 50 ms in the page: how
# they grew, whatever the pace of the worker or of this test.
RECORD = """() => { window.__bands = [];
  setInterval(() => { const n = (BAND_POINTS)('fig-landscape');
    const key = n ? n.join(',') : '';
    if (n && window.__bands[window.__bands.length - 1] !== key) window.__bands.push(key); },
  50); }""".replace("BAND_POINTS", BAND_POINTS)


def growth(page, index: int) -> list[int]:
    """The successive band sizes of run `index` as the page showed them."""
    states = page.evaluate("() => window.__bands")
    sizes = [int(s.split(",")[index]) for s in states if s]
    return [n for i, n in enumerate(sizes) if i == 0 or n != sizes[i - 1]]


def test_launch_watch_live_and_export(browser, tmp_path, shots):
    proc, base = serve(["up"], tmp_path / "data", tmp_path / "up.log")
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    errors: list[str] = []  # the app must run clean: no script errors, no failed callbacks
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}")
            if m.type == "error" else None)
    try:
        # -- the form: a preset fills it, the cost shows, a server-side 422 lands at its field
        page.goto(base + "/new")
        page.wait_for_function("document.querySelector('#new-steps')?.value === '800'",
                               timeout=120_000)
        assert page.inner_text("#new-floor").endswith("×")
        # Dash's polyfill would swap the browser's String trims (and more) for slow ones: the
        # page does not load it (webapp/index_page.py), only the regenerator runtime Dash's
        # scripts need. Only the natives keep U+180E, which stopped being a space in Unicode
        # 6.3.
        assert page.evaluate("['trim', 'trimStart', 'trimEnd'].map(k => '\\u180e'[k]())"
                             ) == ["\u180e"] * 3
        assert page.evaluate("[typeof window._babelPolyfill, typeof regeneratorRuntime.mark]"
                             ) == ["undefined", "function"]
        page.fill("#new-steps", "300000")  # over the server's LANDSCOPE_MAX_STEPS
        page.click("#new-launch")
        page.wait_for_function(
            "document.querySelector('#err-steps')?.innerText.includes('at most')",
            timeout=120_000)
        page.fill("#new-steps", str(STEPS))
        page.fill("#new-stride", str(STRIDE))
        page.wait_for_function("document.querySelector('#err-steps')?.innerText === ''",
                               timeout=120_000)
        page.wait_for_timeout(500)
        shots(page, "new-experiment", full_page=True)
        page.click("#new-launch")
        page.wait_for_url(re.compile(r".*/experiments/\d+$"), timeout=120_000)

        # -- the compare page: both runs' bands grow while the worker trains them (one after
        # the other: the single worker of `up` takes one run at a time)
        page.wait_for_selector("#fig-landscape .js-plotly-plot", timeout=60_000)
        page.evaluate(RECORD)
        page.wait_for_function(
            f"({BAND_POINTS})('fig-landscape')?.join() === '{POINTS},{POINTS}'",
            timeout=600_000)
        for index in (0, 1):
            sizes = growth(page, index)
            # Grew live, in several updates, never shrinking, to every probed step.
            assert len(set(sizes) - {0}) >= 3, sizes
            assert sizes == sorted(sizes) and sizes[-1] == POINTS, sizes
        # grad-predictiveness bands grew too, and Fig 11 has lines
        assert all(n > 0 for n in page.evaluate(BAND_POINTS, "fig-gradpred"))
        shots(page.locator("#section-landscape"), "compare-bands")

        # -- both finish: the page says so and stops asking
        page.wait_for_function(
            "document.querySelector('#cmp-live')?.innerText === 'all runs finished'",
            timeout=240_000)
        # Every probed step once, nothing lost, nothing twice: checked below, once polling
        # has stopped (the graph draws its last patch a moment after the text changes).
        page.wait_for_function(
            f"({BAND_POINTS})('fig-landscape')?.join() === '{POINTS},{POINTS}'",
            timeout=120_000)
        # Training loss and accuracy drawn live to the last step, in step order (the engine
        # writes the accuracy of a window of steps after later losses; the page downsamples
        # again when a live series outgrows its budget, so points are buckets, not steps).
        lines = page.evaluate("""() => document.querySelector('#fig-training .js-plotly-plot')
            .data.filter(t => t.mode === 'lines' && !/[:(]/.test(t.name) && t.x.length)
            .map(t => t.x)""")
        assert len(lines) == 4  # loss and accuracy, two runs
        for xs in lines:
            assert all(a < b for a, b in zip(xs, xs[1:], strict=False)), xs
            # A point is a bucket's mid, the page keeping MAX_POINTS a series: the last one
            # lies within half a bucket of the last step.
            half = STEPS / MAX_POINTS / 2
            assert STEPS - 1 - half <= xs[-1] <= STEPS - 1 and xs[0] <= half, xs
        requests = []
        page.on("request", lambda r: requests.append(r.url)
                if "_dash-update-component" in r.url else None)
        page.wait_for_timeout(3000)
        assert requests == []  # polling stopped
        assert page.evaluate(BAND_POINTS, "fig-landscape") == [POINTS, POINTS]
        shots(page, "compare-page", full_page=True)

        # -- activation distributions: switch layer; both runs side by side and overlaid
        page.locator("#cmp-layer").click()
        page.get_by_text("layer 3", exact=True).click()
        page.wait_for_function(
            "(() => { const gd = document.querySelector('#fig-dist_overlay .js-plotly-plot');"
            " return gd && gd.layout.yaxis.title.text.includes('layer 3'); })()",
            timeout=120_000)
        heat_rows = page.evaluate("""() => document.querySelector('#fig-dist_heat .js-plotly-plot')
            .data.filter(t => t.type === 'heatmap').map(t => t.z.length)""")
        assert heat_rows == [POINTS, POINTS]
        page.locator("#section-dist_heat").scroll_into_view_if_needed()
        shots(page.locator("#section-dist_heat"), "activation-distributions")

        # -- exports: a figure as SVG, a run as CSV
        with page.expect_download(timeout=120_000) as dl:
            page.locator("#section-landscape button:has-text('SVG')").click()
        svg = Path(dl.value.path()).read_text()
        assert dl.value.suggested_filename == "landscope-landscape.svg" and "<svg" in svg[:300]
        href = page.locator(".run-chip a.csv-link").first.get_attribute("href")
        csv = page.request.get(base + href)
        assert csv.ok and csv.text().startswith("run_id,key,step,value")

        # -- the runs table: both succeeded; select them and compare
        page.goto(base + "/")
        page.wait_for_function(
            "document.querySelectorAll('#runs-table tbody tr').length >= 3", timeout=120_000)
        assert page.locator("#runs-table").inner_text().count("succeeded") == 2
        shots(page, "runs-table")
        for box in page.locator("#runs-table input[type=checkbox]").all():
            box.check()
        page.click("#runs-compare")
        page.wait_for_url(re.compile(r".*/compare\?runs=\d+,\d+$"), timeout=120_000)
        page.wait_for_function(
            f"({BAND_POINTS})('fig-landscape')?.join() === '{POINTS},{POINTS}'",
            timeout=120_000)
        # The one expected console error: the 422 the form provoked on purpose.
        assert [e for e in errors if "422" not in e] == [], errors
    finally:
        page.close()
        stop_group(proc)
