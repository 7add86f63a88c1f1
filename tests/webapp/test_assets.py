"""The dashboard ships plotly.js's cartesian partial bundle (webapp/assets): a third of the
full bundle's size, so a first visit parses far less JavaScript before the first graph. Dash's
Graph component uses window.Plotly when it is defined and loads the full bundle otherwise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs_version

from webapp.app import ASSETS, create_dash
from webapp.index_page import POLYFILL_TAG, PRELOAD

BUNDLE = next(ASSETS.glob("plotly-cartesian-*.min.js"))
# The trace types of plotly.js's cartesian bundle (its package's README lists them).
CARTESIAN = {"scatter", "bar", "box", "heatmap", "histogram", "histogram2d",
             "histogram2dcontour", "contour", "image", "pie", "scatterternary", "violin"}


def test_the_bundle_is_the_plotly_js_version_dash_would_load():
    header = BUNDLE.read_text(encoding="utf-8")[:200]
    version = re.search(r"plotly\.js \(cartesian - minified\) v(\S+)", header).group(1)
    assert version == get_plotlyjs_version(), "update webapp/assets with plotly's version"
    assert BUNDLE.name == f"plotly-cartesian-{version}.min.js"
    assert len(list(ASSETS.glob("plotly*.js"))) == 1  # never two Plotly objects on a page


def test_pages_load_the_bundle(api):
    app = create_dash("http://testserver/api/v1", client=api.client)
    page = app.server.test_client().get("/").get_data(as_text=True)
    assert f"assets/{BUNDLE.name}" in page
    assert Path(BUNDLE).stat().st_size < 2_000_000


def test_pages_load_regenerator_runtime_instead_of_dash_s_polyfill(api):
    """@babel/polyfill replaces built-ins plotly.js draws with by slower ones
    (webapp/index_page.py); regeneratorRuntime, the one global Dash's scripts take from it,
    must be defined before the first of them runs."""
    app = create_dash("http://testserver/api/v1", client=api.client)
    # Dash itself still lists the polyfill, in the form the removal matches: when a Dash
    # upgrade drops it or changes its tag, this says so.
    assert len(POLYFILL_TAG.findall(app._generate_scripts_html())) == 1
    page = app.server.test_client().get("/").get_data(as_text=True)
    srcs = re.findall(r'<script src="([^"]+)"', page)
    assert not [s for s in srcs if "polyfill" in s]
    runtime = next(i for i, s in enumerate(srcs) if "00-regenerator-runtime.js" in s)
    dash_scripts = [i for i, s in enumerate(srcs) if "_dash-component-suites/dash/" in s
                    and "/deps/" not in s]
    assert dash_scripts and runtime < min(dash_scripts)
    assert (ASSETS / "00-regenerator-runtime.js").read_text().count("regeneratorRuntime = ")


@pytest.mark.parametrize("prefix", ["/", "/dash/"])
def test_pages_preload_the_component_chunks_a_compare_page_renders(api, prefix):
    """Graph, Slider and Dropdown are chunks Dash asks for late (once a page holding them
    renders): every page preloads them, at the paths Dash serves them from."""
    import dash

    app = create_dash("http://testserver/api/v1", client=api.client,
                      requests_pathname_prefix=prefix)
    http = app.server.test_client()
    # Mounted below a prefix, the app sees paths without it (landscope up strips it).
    page = (http.get("/").get_data(as_text=True) if prefix == "/"
            else app.index_string)
    dcc = Path(dash.__file__).parent / "dcc"
    for name in PRELOAD:
        href = f"{prefix}_dash-component-suites/dash/dcc/{name}"
        assert f'<link rel="preload" as="script" href="{href}">' in page
        if prefix == "/":
            served = http.get(href)
            assert served.status_code == 200 and served.data == (dcc / name).read_bytes()
