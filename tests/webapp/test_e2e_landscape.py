"""End to end in headless Debian chromium: the real product (`landscope up`: API, dashboard,
embedded SQLite and broker, one real worker). A paired quick experiment (no norm, BatchNorm)
trains through the API with snapshots; on its Landscape tab a surface of both runs is
launched from the form (cost first), the worker computes it, and both surfaces appear on one
colour scale; the 3D cameras follow each other, the step slider plays, a figure downloads as
SVG, a grid as CSV; then a spectrum of both runs is launched and drawn.

Screenshots go to the test's temporary folder, and also to LANDSCOPE_SCREENSHOT_DIR when set
(docs/screenshots/landscape-*.png).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import answers as ready
from tests.support.processes import stop_group

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("LANDSCOPE_E2E_LANDSCAPE_PORT", "18510"))
STEPS, EVERY = 200, 100  # snapshots at 0, 100, 200
BASE = {"steps": STEPS, "eval_every": 50, "snapshots": {"every": EVERY},
        "probes": {"landscape": {"every": 50}, "ics": {"every": 0}, "activations": {"every": 0},
                   "sharpness": {"every": 0}}}
# Both runs' 3D surfaces: their colour range, height range and whether every point is drawn.
SURFACES = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .filter(gd => gd.data && gd.data[0] && gd.data[0].type === 'surface')
  .map(gd => ({cmin: gd.data[0].cmin, cmax: gd.data[0].cmax,
               zrange: gd.layout.scene.zaxis.range, title: gd.layout.title.text,
               full: gd.data[0].z.every(row => row.every(v => v !== null)),
               eye: gd.layout.scene.camera && gd.layout.scene.camera.eye}))"""
CONTOURS = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .filter(gd => gd.data && gd.data[0] && gd.data[0].type === 'contour')
  .map(gd => ({zmin: gd.data[0].zmin, zmax: gd.data[0].zmax, title: gd.layout.title.text}))"""
# The eigenvalue densities: two runs' lines on a log y axis.
DENSITIES = """() => [...document.querySelectorAll('.js-plotly-plot')].filter(gd =>
  gd.layout.yaxis && gd.layout.yaxis.type === 'log' && gd.data.length === 2)"""


def api(base: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(base + "/api/v1" + path, method="POST" if body else "GET",
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def serve(data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCOPE_")}
    env["LANDSCOPE_DATA_DIR"] = str(data_dir)
    env["OMP_NUM_THREADS"] = "1"  # see test_e2e_browser.serve
    base = f"http://127.0.0.1:{PORT}"
    assert not ready(base), f"port {PORT} is taken"
    proc = subprocess.Popen([sys.executable, "-m", "landscope.cli", "up", "--port", str(PORT)],
                            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ready(base):
            return proc, base
        time.sleep(0.2)
    stop_group(proc)
    raise AssertionError(f"`landscope up` did not start:\n{log.read_text()[-3000:]}")


def wait_runs(base: str, experiment_id: int, timeout: float = 600) -> list[dict]:
    """The experiment's runs once every one has finished training."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api(base, f"/runs?experiment_id={experiment_id}")["items"]
        if runs and all(r["status"] in ("succeeded", "failed", "diverged") for r in runs):
            assert {r["status"] for r in runs} == {"succeeded"}, runs
            return runs
        time.sleep(1)
    raise AssertionError(f"runs did not finish: {runs}")




def choose(page, dropdown: str, label: str) -> None:
    page.locator(dropdown).click()
    page.get_by_role("option", name=label, exact=True).click()


def test_launch_a_surface_from_the_tab_and_see_both_runs_on_one_scale(browser, tmp_path,
                                                                      shots):
    proc, base = serve(tmp_path / "data", tmp_path / "up.log")
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    page.add_init_script(f"window.lsSurfaces = {SURFACES}; window.lsContours = {CONTOURS};"
                         f" window.lsDensities = {DENSITIES};")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}")
            if m.type == "error" else None)
    try:
        # No preset analyses (a surface and a spectrum when each run ends): the tab's list then
        # holds exactly what this test launches.
        exp = api(base, "/experiments", {"preset": "quick-mlp", "base": BASE,
                                         "analyses": []})["id"]
        runs = wait_runs(base, exp)
        assert {r["spec"]["norm"] for r in runs} == {"none", "batch"}

        # -- the form: its cost (a dry run), then Launch
        page.goto(f"{base}/experiments/{exp}?tab=landscape")
        page.wait_for_selector("#ls-cost table", timeout=120_000)
        page.fill("#ls-steps", f"{EVERY}, {STEPS}")
        page.fill("#ls-points", "11")
        page.fill("#ls-samples", "512")
        page.locator("#ls-samples").press("Tab")
        # 2 runs x 2 steps x 11 x 11 points, a forward pass of 512 samples each
        page.wait_for_function("document.querySelector('#ls-cost')?.innerText"
                               ".includes('484 of 512 samples')", timeout=60_000)
        page.click("#ls-launch")
        page.wait_for_function("document.querySelector('#ls-message')?.innerText"
                               ".startsWith('Launched 2 analyses')", timeout=60_000)

        # -- the worker fills both surfaces; they appear, complete, on one colour scale
        page.wait_for_function("() => { const s = window.lsSurfaces();"
                               " return s.length === 2 && s.every(x => x.full); }",
                               timeout=600_000)
        surfaces = page.evaluate("window.lsSurfaces()")
        contours = page.evaluate("window.lsContours()")
        assert len(contours) == 2
        ranges = {(s["cmin"], s["cmax"]) for s in surfaces} | {tuple(s["zrange"])
                                                               for s in surfaces}
        ranges |= {(c["zmin"], c["zmax"]) for c in contours}
        assert len(ranges) == 1, ranges  # colours and heights: one scale for both runs
        titles = [s["title"] for s in surfaces + contours]
        assert all("BN mode: batch statistics" in t and f"step {STEPS}" in t for t in titles)
        assert sum("norm: none" in t for t in titles) == 2
        assert sum("norm: batch" in t for t in titles) == 2
        # The shown step's surfaces can be full while another analysed step is still being
        # computed: the list says succeeded once every step is; wait for that, not a guess.
        page.wait_for_function("(document.querySelector('#ls-list')?.innerText || '')"
                               ".split('succeeded').length - 1 === 2", timeout=600_000)
        page.wait_for_timeout(500)  # let WebGL finish drawing before the pictures
        shots(page, "landscape-tab", full_page=True)
        section = page.locator(".ls-section").first
        section.scroll_into_view_if_needed()
        shots(section, "landscape-surfaces")
        # what the worker computed them in, once for both (one worker, one environment)
        env_line = section.locator(".env-line").inner_text()
        assert env_line.startswith("Computed in: 1 thread · float32") and env_line.endswith(
            "(2 analyses)"), env_line

        # -- turning one surface turns the other (relayoutData -> scene.camera)
        page.evaluate("""() => { const gd = [...document.querySelectorAll('.js-plotly-plot')]
            .filter(g => g.data[0].type === 'surface')[0];
            return window.Plotly.relayout(gd, {'scene.camera': {eye: {x: 2.1, y: 0.3, z: 0.6},
                up: {x: 0, y: 0, z: 1}, center: {x: 0, y: 0, z: 0}}}); }""")
        page.wait_for_function("() => { const s = window.lsSurfaces();"
                               " return s[1].eye && Math.abs(s[1].eye.x - 2.1) < 1e-9; }",
                               timeout=60_000)

        # -- the step slider plays: from the last step it wraps to the first analysed one
        page.click("#ls-play")
        page.wait_for_function(
            f"() => window.lsContours().every(c => c.title.includes('step {EVERY}'))",
            timeout=60_000)
        page.click("#ls-play")  # pause

        # -- exports: SVG through the modebar's camera, the grid as CSV
        choose(page, "#ls-format", "SVG")
        page.wait_for_function(
            "document.querySelector('.ls-section .js-plotly-plot')?._context"
            ".toImageButtonOptions.format === 'svg'", timeout=60_000)
        graph = page.locator(".ls-section .js-plotly-plot").first
        graph.hover()
        with page.expect_download(timeout=120_000) as dl:
            graph.locator(".modebar-btn[data-title^='Download plot']").click()
        assert dl.value.suggested_filename.endswith(".svg")
        assert "<svg" in Path(dl.value.path()).read_text()[:300]
        href = page.locator(".ls-links a.csv-link").first.get_attribute("href")
        csv = page.request.get(base + href)
        assert csv.ok and csv.text().startswith("analysis_id,run_id,step,idx")
        assert csv.text().count("\n") == 1 + 2 * 121

        # -- a spectrum of both runs: the density with and without BN on a log axis
        choose(page, "#ls-kind", "Hessian spectrum")
        page.fill("#ls-steps", f"0, {EVERY}, {STEPS}")
        page.fill("#ls-samples", "256")
        page.locator("#ls-samples").press("Tab")
        page.wait_for_function("document.querySelector('#ls-cost')?.innerText"
                               ".includes('Hessian-vector products')", timeout=60_000)
        page.click("#ls-launch")
        page.wait_for_function("() => window.lsDensities().length === 1", timeout=600_000)
        assert page.evaluate("window.lsDensities()[0].layout.title.text").count("BN mode") == 1
        spectrum = page.locator(".ls-section").last
        spectrum.scroll_into_view_if_needed()
        # the numbers beside the figures: one row per run, both at the step the page shows
        page.wait_for_function("document.querySelectorAll('.spectrum-table tbody tr').length"
                               " === 2", timeout=600_000)
        rows = [r.split("\t") for r in
                spectrum.locator(".spectrum-table tbody tr").all_inner_texts()]
        assert [len(r) for r in rows] == [6, 6], rows
        assert rows[0][1] == rows[1][1] and int(rows[0][1]) in (0, EVERY, STEPS), rows
        page.wait_for_timeout(300)
        shots(spectrum, "landscape-spectra")
        assert errors == [], errors
    finally:
        page.close()
        stop_group(proc)
