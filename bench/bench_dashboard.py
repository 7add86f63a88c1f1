"""Dashboard benchmark: how fast the compare page opens, and how soon a new point shows.

    python bench/bench_dashboard.py            # 8 runs x 10,000 steps; appends bench/RESULTS.md
    python bench/bench_dashboard.py --quick    # 2 runs x 600 steps, 2 loads: the smoke test

1. Page load: synthetic runs (tests/support/synthetic.py: every key the engine writes, on its
   schedule) go straight into a SQLite database; `landscope api` serves the API and the
   dashboard on it; headless Debian chromium opens /experiments/<id>. Time from navigation
   start until every graph holds all its runs' traces and has drawn them (a requestAnimation-
   Frame poll of the plotly divs), as the page's own performance.now(). Three cases:
   - cold: a fresh server and a fresh browser profile: nothing cached anywhere (the first
     visit after `landscope up`);
   - new visitor: a warm server (finished runs' data cached in the dashboard) but a fresh
     browser profile (downloads and compiles plotly.js again);
   - reload: the same tab again (browser cache warm too).
   Target: the compare page loaded and drawn in under 2 s.
   Grouped (issue 14): 3 seeds x 2 normalisations x the same steps in a second experiment,
   opened grouped (the default when groups have several runs): every graph drawn with a
   band per seed group (the probe bands' envelope and median band, the scalar figures'
   centre over its band), from one grouped SQL read per figure; same cases, same target.
   Side by side (1c): the grouped page's new-visitor load as served against the same page
   with Dash's @babel/polyfill put back (the dashboard no longer loads it,
   webapp/index_page.py), ABBA on one server (bench/_dashboard_polyfill.py).
2. Live latency: two runs still 'running'; the benchmark writes a new probed step into the
   database as the worker's sink would, at random moments, and times until the landscape band
   on the open page has it. Target: a point appears within 2 s of being written.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _dashboard_polyfill as polyfill_ab  # noqa: E402
from bench._machine import _cpuinfo_model, cpu_pressure_us, loadavg  # noqa: E402
from bench._server import Server  # noqa: E402
from server.db.migrate import upgrade  # noqa: E402
from server.db.session import make_engine  # noqa: E402
from server.spec import build_spec  # noqa: E402
from tests.support.seeded import seeded_experiment  # noqa: E402
from tests.support.synthetic import (  # noqa: E402
    BASE_SPEC,
    SyntheticRun,
    create_experiment,
    write_steps,
)

RESULTS = ROOT / "bench" / "RESULTS.md"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
NORMS = ["none", "batch", "noisy_batch", "noise", "l1", "l2", "linf", "layer"]
GRAPHS = ["training", "landscape", "gradpred", "beta", "etas", "ics", "dist_heat",
          "dist_overlay", "sharpness", "dynamics"]
# Every graph drawn with data, `bands` probe bands on the landscape and a heatmap per run.
# Single runs: a band per run (a tonexty fill); seed groups: an envelope per group (its
# meta.role, webapp/figures/groups.py). The per-run figures (Fig 11, activation
# distributions) draw every run, or, by seed group, each group's first run: `heats` of them.
DRAWN = """([graphs, grouped, bands, heats]) => {
  for (const n of graphs) {
    const gd = document.querySelector('#fig-' + n + ' .js-plotly-plot');
    if (!gd || !gd.data || !gd.data.length || !gd._fullData) return false;
    if (gd._fullData.length !== gd.data.length) return false;
    if (!gd.querySelector('.main-svg .trace, .main-svg .hm')) return false;
    if (!gd.data.some(t => (t.x && t.x.length) || (t.z && t.z.length))) return false;
  }
  const isBand = grouped ? (t => t.meta && t.meta.role === 'envelope')
                         : (t => t.fill === 'tonexty');
  const drawn = document.querySelector('#fig-landscape .js-plotly-plot').data
    .filter(t => isBand(t) && t.x.length);
  const drawnHeats = document.querySelector('#fig-dist_heat .js-plotly-plot').data
    .filter(t => t.type === 'heatmap' && t.z.length);
  return drawn.length === bands && drawnHeats.length === heats ? performance.now() : false;
}"""
BUILD_REQUEST = """() => performance.getEntriesByType('resource')
  .filter(e => e.name.includes('_dash-update-component'))
  .map(e => [e.startTime, e.responseEnd, e.transferSize])
  .sort((a, b) => b[2] - a[2])[0]"""
BAND_LEN = """() => { const gd = document.querySelector('#fig-landscape .js-plotly-plot');
  return gd && gd.data ? gd.data.filter(t => t.fill === 'tonexty').map(t => t.x.length) : null; }"""


def _load(page, url: str, runs: int, groups: int | None = None) -> dict[str, float]:
    """One load of `url` until drawn: `runs` single runs, or `groups` seed groups of them."""
    page.goto(url)
    per_run = runs if groups is None else groups  # bands, and the heatmaps drawn
    arg = [GRAPHS, groups is not None, per_run, per_run]
    done = page.wait_for_function(DRAWN, arg=arg, timeout=120_000, polling="raf").json_value()
    start, end, size = page.evaluate(BUILD_REQUEST)
    return {"total_ms": done, "build_request_ms": end - start, "render_ms": done - end,
            "response_kb": size / 1024}


def bench_loads(data: Path, exp: int, runs: int, reps: int, browser,
                groups: int | None = None) -> dict[str, list[dict]]:
    url_path = f"/experiments/{exp}"

    def load_once(page, url: str, runs: int) -> dict[str, float]:
        return _load(page, url, runs, groups)

    out: dict[str, list[dict]] = {"cold": [], "new visitor": [], "reload": []}
    for _ in range(reps):  # cold: a new server process and a new browser profile each time
        server = Server(data)
        try:
            ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
            out["cold"].append(load_once(ctx.new_page(), server.base + url_path, runs))
            ctx.close()
        finally:
            server.stop()
    server = Server(data)
    try:
        for _ in range(reps):
            ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
            out["new visitor"].append(load_once(ctx.new_page(), server.base + url_path, runs))
            ctx.close()
        ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
        page = ctx.new_page()
        load_once(page, server.base + url_path, runs)
        for _ in range(reps):
            out["reload"].append(load_once(page, server.base + url_path, runs))
        ctx.close()
    finally:
        server.stop()
    return out


def bench_latency(data: Path, samples: int, browser) -> list[float]:
    """Seconds from a probed step's commit to its band point on the open page."""
    engine = make_engine(f"sqlite:///{data / 'landscope.db'}")
    every = BASE_SPEC["probes"]["landscape"]["every"]
    exp, ids = create_experiment(engine, ["none", "batch"], steps=100_000, done=1000,
                                 status="running")
    run = SyntheticRun(build_spec({**BASE_SPEC, "steps": 100_000, "norm": "none"}), seed=ids[0])
    server = Server(data)
    latencies = []
    try:
        page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
        page.goto(f"{server.base}/experiments/{exp}")
        page.wait_for_function(f"(({BAND_LEN})() || [0])[0] > 0", timeout=120_000)
        rng = random.Random(0)
        for step in range(1000, 1000 + samples * every, every):
            time.sleep(rng.uniform(0.3, 1.3))  # land anywhere in the poll period
            before = page.evaluate(BAND_LEN)[0]
            write_steps(engine, ids[0], run, step, step + every)  # one probed step
            written = time.perf_counter()
            page.wait_for_function(f"({BAND_LEN})()[0] > {before}", timeout=30_000,
                                   polling=20)
            latencies.append(time.perf_counter() - written)
    finally:
        server.stop()
        engine.dispose()
    return latencies


def p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def report(args, machine: dict, setup: dict, loads: dict, latency: list[float],
           grouped: dict, ab: dict) -> str:
    def row(name: str, xs: list[dict]) -> str:
        tot = [x["total_ms"] for x in xs]
        verdict = "met" if statistics.median(tot) < 2000 else "**MISSED**"
        return (f"| {name} | {len(xs)} | **{statistics.median(tot):.0f}** | {min(tot):.0f} / "
                f"{max(tot):.0f} | {statistics.median(x['build_request_ms'] for x in xs):.0f} | "
                f"{statistics.median(x['render_ms'] for x in xs):.0f} | "
                f"{statistics.median(x['response_kb'] for x in xs):.0f} | {verdict} |")

    lines = [
        f"## {machine['date']} - dashboard ({'quick' if args.quick else 'full'})", "",
        f"- machine: {machine['cpu']}, {machine['cpus']} cores usable, load average at start "
        f"{machine['load']}; CPU pressure during the run {machine['pressure']}",
        f"- python {machine['python']}, dash {machine['dash']}, plotly {machine['plotly']} "
        f"(plotly.js {machine['plotly_js']}), {machine['chromium']} headless, playwright "
        f"{machine['playwright']}",
        f"- data: {setup['runs']} runs x {setup['steps']:,} steps on SQLite "
        f"({setup['points']:,} scalar points, every key the engine writes on the "
        f"`tests/support/synthetic.py` schedule), written in {setup['write_s']:.1f} s",
        f"- command: `{' '.join(['python', 'bench/bench_dashboard.py', *sys.argv[1:]])}`",
        "",
        "### 1. Compare page: navigation start to every graph drawn (target < 2 s)", "",
        "cold: fresh server and browser profile; new visitor: warm server, fresh profile; "
        "reload: same tab. build = the request that builds the figures (the page's layout, "
        "which carries the first build: server fetches from the API, builds, encodes); "
        "render = from its response to the last graph drawn.", "",
        "| case | loads | p50 ms | min / max ms | build request p50 ms | render p50 ms | "
        "response kB | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[row(name, xs) for name, xs in loads.items()], "",
        f"### 1b. Grouped: {setup['grouped']['groups']} seed groups of "
        f"{setup['grouped']['seeds']} runs x {setup['steps']:,} steps (median and min-max band "
        "per group, one grouped SQL read per figure; Fig 11 and the activation distributions "
        "draw each group's first run; target < 2 s)", "",
        "| case | loads | p50 ms | min / max ms | build request p50 ms | render p50 ms | "
        "response kB | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[row(name, xs) for name, xs in grouped.items()], "",
        *ab_section(ab),
        "### 2. Live: a probed step written to the database until its band point shows "
        "(target < 2 s)", "",
        f"{len(latency)} samples: p50 **{p(latency, 0.5):.2f} s**, p90 {p(latency, 0.9):.2f} s, "
        f"max {max(latency):.2f} s (poll every 1 s; the worker's sink adds up to 1 s more "
        f"before a point is in the database) - "
        f"{'met' if p(latency, 0.5) < 2 else '**MISSED**'}", "",
        "<details><summary>raw (JSON)</summary>", "", "```json",
        json.dumps({"loads": loads, "grouped": grouped, "latency_s": latency,
                    "polyfill_ab": ab}, indent=None,
                   default=float)[:20000],
        "```", "", "</details>", "",
    ]
    return "\n".join(lines)


def ab_section(ab: dict) -> list[str]:
    s = polyfill_ab.summary(ab)
    return [
        "### 1c. Side by side: the grouped page with and without Dash's @babel/polyfill", "",
        f"{s['pairs']} new-visitor loads of each, ABBA on one warm server "
        "(bench/_dashboard_polyfill.py): the page as served (regenerator-runtime only) against "
        "the page with the polyfill put back (with the String trims it once restored).", "",
        "| variant | p50 ms | render p50 ms |", "| --- | --- | --- |",
        f"| as served (no polyfill) | **{s['without_ms']:.0f}** | {s['without_render_ms']:.0f} |",
        f"| with Dash's polyfill | {s['with_ms']:.0f} | {s['with_render_ms']:.0f} |", "",
        f"Paired ratio with / without: median **{s['ratio']:.2f}**; the page without it loaded "
        f"faster in {s['faster_pairs']} of {s['pairs']} pairs.", ""]


def versions(browser) -> dict:
    from importlib.metadata import version

    import dash
    import plotly

    pkg = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    js = re.search(r"plotly\.js v([\d.]+)", pkg.read_text()[:400])
    return {"dash": dash.__version__, "plotly": plotly.__version__,
            "plotly_js": js.group(1) if js else "?", "playwright": version("playwright"),
            "chromium": f"chromium {browser.version}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 runs x 600 steps, 2 loads")
    ap.add_argument("--reps", type=int, default=None, help="loads per case (default 5)")
    ap.add_argument("--results", type=Path, default=None,
                    help="append the report here (default bench/RESULTS.md for full runs)")
    args = ap.parse_args()
    runs, steps = (2, 600) if args.quick else (8, 10_000)
    reps = args.reps or (2 if args.quick else 5)
    from playwright.sync_api import sync_playwright

    pressure0, t0 = cpu_pressure_us(), time.monotonic()
    machine = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
               "cpu": _cpuinfo_model(), "cpus": len(os.sched_getaffinity(0)), "load": loadavg(),
               "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="landscope-bench-") as tmp, \
            sync_playwright() as pw:
        data = Path(tmp)
        url = f"sqlite:///{data / 'landscope.db'}"
        upgrade(url)
        engine = make_engine(url)
        started = time.perf_counter()
        exp, ids = create_experiment(engine, NORMS[:runs], steps=steps)
        setup = {"runs": runs, "steps": steps, "write_s": time.perf_counter() - started,
                 "points": _points(engine)}
        started = time.perf_counter()
        gexp, gids = seeded_experiment(engine, ("none", "batch"), seeds=3, steps=steps)
        setup["grouped"] = {"groups": len(gids), "seeds": 3, "runs": sum(map(len, gids)),
                            "write_s": time.perf_counter() - started}
        engine.dispose()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        machine.update(versions(browser))
        loads = bench_loads(data, exp, runs, reps, browser)
        g = setup["grouped"]
        grouped = bench_loads(data, gexp, g["runs"], reps, browser, groups=g["groups"])
        server = Server(data)
        try:
            ab = polyfill_ab.loads_side_by_side(
                f"{server.base}/experiments/{gexp}",
                lambda page, url: _load(page, url, g["runs"], g["groups"]),
                2 if args.quick else 2 * reps, browser)
        finally:
            server.stop()
        latency = bench_latency(data, 4 if args.quick else 12, browser)
        browser.close()
    p1 = cpu_pressure_us()
    machine["pressure"] = (f"{(p1 - pressure0) / 1e6 / (time.monotonic() - t0):.2f}"
                           if p1 is not None and pressure0 is not None else "unknown")
    text = report(args, machine, setup, loads, latency, grouped, ab)
    print(text)
    out = args.results or (None if args.quick else RESULTS)
    if out is not None:
        with out.open("a") as f:
            f.write("\n" + text)
    return 0


def _points(engine) -> int:
    from sqlalchemy import func, select

    from server.db.models import Point

    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Point)).scalar_one()


if __name__ == "__main__":
    raise SystemExit(main())
