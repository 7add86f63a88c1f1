"""bench/bench_dashboard.py's side-by-side check of dropping Dash's @babel/polyfill
(webapp/index_page.py): the grouped compare page loaded by new visitors (warm server, fresh
browser profile), the page as served against the page with the polyfill put back, taken in
turn (ABBA) in one run on one server.

The polyfill goes back where the page loads assets/00-regenerator-runtime.js, the first script
after React (the polyfill defines regeneratorRuntime itself), together with what the dashboard
did while it still loaded it: its String trims put back to the browser's own. Both variants
are served through the same browser-side route, so neither pays for routing alone.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import dash

from webapp.app import ASSETS

RUNTIME = ASSETS / "00-regenerator-runtime.js"
POLYFILL = Path(dash.__file__).parent / "deps" / "polyfill@7.12.1.min.js"
TRIMS = ["trim", "trimStart", "trimEnd", "trimLeft", "trimRight"]


def with_polyfill() -> str:
    """The polyfill, with the browser's String trims kept across it (as the page had it)."""
    keep = (f"var __natives = {TRIMS!r}.map(function (k) {{ return [k, String.prototype[k]]; }});"
            .replace("'", '"'))
    put_back = ("__natives.forEach(function (e) { Object.defineProperty(String.prototype, e[0], "
                "{value: e[1], writable: true, configurable: true, enumerable: false}); });")
    return f"{keep}\n{POLYFILL.read_text()}\n;{put_back}"


def _serving(body: str):
    # One parameter: playwright passes the request too to a handler that takes two.
    def handler(route) -> None:
        route.fulfill(status=200, content_type="application/javascript", body=body)

    return handler


def loads_side_by_side(base: str, load, pairs: int, browser) -> dict[str, list[dict]]:
    """`pairs` new-visitor loads of each variant, ABBA. `load(page, url)` times one load."""
    bodies = {"as served (no polyfill)": RUNTIME.read_text(),
              "with Dash's polyfill": with_polyfill()}
    names = list(bodies)
    out: dict[str, list[dict]] = {n: [] for n in names}
    ctx = browser.new_context()  # warm the server's caches: every timed load is a new visitor
    load(ctx.new_page(), base)
    ctx.close()
    for i in range(pairs):
        for name in (names if i % 2 == 0 else names[::-1]):
            ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
            ctx.route("**/assets/00-regenerator-runtime.js*", _serving(bodies[name]))
            page = ctx.new_page()
            out[name].append(load(page, base))
            ctx.close()
    return out


def summary(ab: dict[str, list[dict]]) -> dict[str, float | int]:
    """Medians, the paired ratio (with polyfill / without) and in how many pairs it is > 1."""
    (a, xs), (b, ys) = ab.items()
    ratios = [y["total_ms"] / x["total_ms"] for x, y in zip(xs, ys, strict=True)]
    return {"without_ms": statistics.median(x["total_ms"] for x in xs),
            "with_ms": statistics.median(y["total_ms"] for y in ys),
            "without_render_ms": statistics.median(x["render_ms"] for x in xs),
            "with_render_ms": statistics.median(y["render_ms"] for y in ys),
            "ratio": statistics.median(ratios), "faster_pairs": sum(r > 1 for r in ratios),
            "pairs": len(ratios)}
