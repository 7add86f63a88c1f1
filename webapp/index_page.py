"""The HTML page every dashboard URL starts from, and the scripts it loads.

- `INDEX_STRING`: the page Dash fills in, with `preload_links` for dcc's chunks.
- `LandscopeDash`: Dash, less @babel/polyfill. Dash still loads that polyfill (core-js 2) for
  browsers it no longer supports, and core-js's feature tests, written before today's engines,
  replace some of every current browser's built-ins with slower versions of its own (String
  trims 35x slower, Number.prototype.toFixed, ...), which plotly.js calls while it draws. The
  one global Dash's own scripts need from it, regeneratorRuntime (its renderer and dcc were
  compiled for generators), comes from assets/00-regenerator-runtime.js, which loads after
  React and before every Dash script (Dash puts asset scripts between its dependencies and
  its components). bench/bench_dashboard.py times the compare page with and without the
  polyfill side by side (its section 1c in bench/RESULTS.md).
"""

from __future__ import annotations

import re

from dash import Dash

INDEX_STRING = """<!DOCTYPE html>
<html>
    <head>
        {%metas%}
        <title>{%title%}</title>
        {%favicon%}
        {%css%}
        {%preload%}
    </head>
    <body>
        {%app_entry%}
        <footer>
            {%config%}
            {%scripts%}
            {%renderer%}
        </footer>
    </body>
</html>"""

# dcc's Graph, Slider and Dropdown come in chunks that Dash asks for only once a page holding
# them is rendered: on a compare page, after its figures arrived (about 0.1 s more on a first
# visit, bench/RESULTS.md). The browser fetches them alongside the other scripts instead.
PRELOAD = ("async-graph.js", "async-slider.js", "async-dropdown.js")

# Dash's tag for @babel/polyfill (deps/polyfill@7..., served locally or from unpkg).
POLYFILL_TAG = re.compile(r'<script src="[^"]*polyfill@7[^"]*"></script>\s*')


def preload_links(prefix: str) -> str:
    return "".join(f'<link rel="preload" as="script" '
                   f'href="{prefix}_dash-component-suites/dash/dcc/{name}">' for name in PRELOAD)


def without_polyfill(scripts: str) -> str:
    """Dash's script tags less @babel/polyfill's."""
    return POLYFILL_TAG.sub("", scripts)


class LandscopeDash(Dash):
    """Dash whose pages do not load @babel/polyfill (Dash documents interpolate_index as the
    place to change the page it serves)."""

    def interpolate_index(self, **kwargs):
        kwargs["scripts"] = without_polyfill(kwargs.get("scripts", ""))
        return super().interpolate_index(**kwargs)
