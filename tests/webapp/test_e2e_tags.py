"""End to end in headless Debian chromium against `landscope api` (API and dashboard, embedded
SQLite and broker; no worker: the runs stay queued, which is all this needs): the Runs page
filtered by a tag shows only the tagged runs (the API filters: the table holds nothing else),
and a note typed on a run's page is saved and comes back after a reload."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from tests.support.served import landscope_server

pytestmark = pytest.mark.slow

ROWS = "[...document.querySelectorAll('#runs-table tbody td[data-dash-column=\"id\"]')]" \
       ".map(td => Number(td.innerText.trim()))"


def call(base: str, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(base + "/api/v1" + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_filter_the_runs_by_a_tag_and_note_a_run(browser, tmp_path, shots):
    with landscope_server("api", tmp_path) as base:
        exp = call(base, "POST", "/experiments", {"preset": "quick-mlp",
                                                  "vary": {"norm": ["none", "batch", "layer"]}})
        ids = [r["id"] for r in exp["runs"]]
        call(base, "PATCH", f"/runs/{ids[1]}", {"tags": ["keep", "bn"]})
        call(base, "POST", f"/runs/{ids[2]}/tags/keep")
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            page.goto(base + "/")
            page.wait_for_function(f"{ROWS}.length === 3", timeout=60_000)
            page.fill("#runs-tag", "keep")
            page.press("#runs-tag", "Enter")  # (debounced: Enter or leaving the field)
            page.wait_for_function(f"{ROWS}.join() === '{ids[2]},{ids[1]}'", timeout=60_000)
            assert "bn keep" in page.locator("#runs-table").inner_text()
            page.fill("#runs-tag", "keep, bn")
            page.press("#runs-tag", "Enter")
            page.wait_for_function(f"{ROWS}.join() === '{ids[1]}'", timeout=60_000)
            shots(page, "runs-filtered-by-tag")
            # The run's page: its tags, and a note written and saved.
            page.click(f"#runs-table a[href$='/compare?runs={ids[1]}']")
            page.wait_for_url(re.compile(rf".*/compare\?runs={ids[1]}$"), timeout=60_000)
            note = page.locator(".annotations textarea")
            note.wait_for(timeout=60_000)
            assert page.locator(".annotations .tag-chip").all_inner_texts() == ["bn", "keep"]
            note.fill("BatchNorm run: lr 0.1 was too high")
            page.click(".annotations button:has-text('Save')")
            page.wait_for_function("document.querySelector('.annotations .message')"
                                   "?.innerText === 'Saved.'", timeout=60_000)
            assert call(base, "GET", f"/runs/{ids[1]}")["note"] == (
                "BatchNorm run: lr 0.1 was too high")
            page.reload()
            page.locator(".annotations textarea").wait_for(timeout=60_000)
            assert page.locator(".annotations textarea").input_value() == (
                "BatchNorm run: lr 0.1 was too high")
            shots(page, "run-note")
            assert errors == [], errors
        finally:
            page.close()
