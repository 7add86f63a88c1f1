"""End to end in headless Debian chromium against `landscope api` over synthetic runs: pages of
deleted runs, of an experiment with no runs left and of one that never existed show only why
(and the way back to the runs list), never tabs, controls or empty figures; a link to some
deleted runs shows the others and names the missing; an emptied experiment can be deleted
from its page; /runs/<id> opens the run's page, and an address with no page says so."""

from __future__ import annotations

import re
import urllib.error

import pytest

from tests.support.served import landscope_server
from tests.webapp.test_e2e_runs_table import call, seed

pytestmark = pytest.mark.slow

VIEW = "#exp-tab, .figure-card, #cmp-live, .view-controls"


def test_pages_of_missing_things_say_what_is_missing(browser, tmp_path, shots):
    ids = seed(tmp_path, ["none", "batch", "layer"])  # experiment 1
    with landscope_server("api", tmp_path) as base:
        for rid in ids[:2]:
            call(base, "DELETE", f"/runs/{rid}")
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            for path, words in [(f"/compare?runs={ids[0]}", [f"#{ids[0]}", "not found"]),
                                ("/experiments/999", ["Experiment 999 not found"])]:
                page.goto(base + path)
                gone = page.locator("#cmp-gone")
                gone.wait_for(timeout=60_000)
                assert all(w in gone.inner_text() for w in words), gone.inner_text()
                page.wait_for_timeout(500)
                assert page.locator(VIEW).count() == 0
                shots(page, "missing-" + re.sub(r"\W+", "-", path).strip("-"))
            # A run's address as the REST API spells it opens the run's page (its compare
            # view) in its place, so that Back does not bounce into it again.
            page.goto(base + "/")
            page.locator("#runs-table").wait_for(timeout=60_000)
            page.goto(base + f"/runs/{ids[2]}")
            page.wait_for_url(re.compile(rf".*/compare\?runs={ids[2]}$"), timeout=60_000)
            page.wait_for_selector("#fig-training .js-plotly-plot", timeout=60_000)
            page.go_back()
            page.wait_for_url(re.compile(r".*:\d+/$"), timeout=60_000)
            page.goto(base + "/runs/abc")
            page.locator("#cmp-gone").wait_for(timeout=60_000)
            assert "No run 'abc'" in page.inner_text("#cmp-gone")
            # An address with no page: says so and where the pages are, not a bare 404.
            page.goto(base + "/no/such/page")
            page.locator("#not-found").wait_for(timeout=60_000)
            assert page.locator("#_pages_content a", has_text="New experiment").count() == 1
            shots(page, "missing-page")
            # Some runs gone: the others drawn, the missing named.
            page.goto(base + f"/compare?runs={ids[0]},{ids[2]}")
            page.wait_for_selector("#fig-training .js-plotly-plot", timeout=60_000)
            assert f"#{ids[0]} not found" in page.inner_text("#cmp-notice")
            assert page.inner_text("#cmp-title") == f"compare runs {ids[2]}"
            shots(page, "missing-some-runs")
            # The experiment's last run goes: its page says it has none left.
            call(base, "DELETE", f"/runs/{ids[2]}")
            page.goto(base + "/experiments/1")
            page.locator("#cmp-gone").wait_for(timeout=60_000)
            assert "has no runs left" in page.inner_text("#cmp-gone")
            assert page.locator(VIEW).count() == 0
            shots(page, "missing-experiment-runs")
            page.click("text=Back to the runs")
            page.wait_for_url(re.compile(r".*:\d+/$"), timeout=60_000)
            page.locator("#runs-table").wait_for(timeout=60_000)
            # ... and deletes it from there: confirmed, it is gone and the runs list shows.
            page.goto(base + "/experiments/1")
            page.once("dialog", lambda d: d.accept())
            page.click("#exp-delete")
            page.wait_for_url(re.compile(r".*:\d+/$"), timeout=60_000)
            page.locator("#runs-table").wait_for(timeout=60_000)
            with pytest.raises(urllib.error.HTTPError) as gone:
                call(base, "GET", "/experiments/1")
            assert gone.value.code == 404
            assert errors == [], errors
        finally:
            page.close()
