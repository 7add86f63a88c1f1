"""The dashboard ships plotly.js's cartesian partial bundle (webapp/assets): a third of the
full bundle's size, so a first visit parses far less JavaScript before the first graph. Dash's
Graph component uses window.Plotly when it is defined and loads the full bundle otherwise."""

from __future__ import annotations

import re
from pathlib import Path

from plotly.offline import get_plotlyjs_version

from webapp.app import ASSETS, create_dash

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
