"""End to end in headless Debian chromium against `landscope api` (API and dashboard, embedded
SQLite and broker, no worker) over synthetic finished runs: the Runs table's selection follows
run ids, never row positions (after a delete, and when new runs push the rows down), and the
table fits a 1400 px window with every column in view."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from server.db.migrate import upgrade
from server.db.session import make_engine
from tests.support.served import landscope_server
from tests.support.synthetic import create_experiment

pytestmark = pytest.mark.slow

# The run id of each row, in the order shown, and the ids whose checkbox is ticked.
ROWS = """() => [...document.querySelectorAll('#runs-table tbody tr')]
  .filter(tr => tr.querySelector('td[data-dash-column="id"]'))
  .map(tr => [Number(tr.querySelector('td[data-dash-column="id"]').innerText.trim()),
              tr.querySelector('input[type=checkbox]').checked])"""


def call(base: str, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(base + "/api/v1" + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else {}  # a DELETE answers 204, no body


def seed(tmp_path: Path, norms: list[str]) -> list[int]:
    """Finished synthetic runs in the database `landscope api` will open; their ids."""
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'landscope.db'}"
    upgrade(url)
    engine = make_engine(url)
    _exp, ids = create_experiment(engine, norms, steps=40)
    engine.dispose()
    return ids


def shown(page) -> list[int]:
    return [rid for rid, _ in page.evaluate(ROWS)]


def ticked(page) -> list[int]:
    return [rid for rid, checked in page.evaluate(ROWS) if checked]


def tick(page, rid: int) -> None:
    """Click run `rid`'s checkbox, as a user does (the row found by its id cell)."""
    index = shown(page).index(rid)
    page.locator("#runs-table tbody input[type=checkbox]").nth(index).check()


def wait_rows(page, ids: list[int]) -> None:
    page.wait_for_function(f"({ROWS})().map(r => r[0]).join() === '{','.join(map(str, ids))}'",
                           timeout=60_000)


def test_the_selection_follows_run_ids_through_a_delete_and_new_runs(browser, tmp_path):
    ids = seed(tmp_path, ["none", "batch", "layer", "group"])
    newest_first = sorted(ids, reverse=True)
    with landscope_server("api", tmp_path) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("dialog", lambda d: d.accept())  # the delete confirmation
        try:
            page.goto(base + "/")
            wait_rows(page, newest_first)
            # Delete the top run: the row that moves into its place must not be ticked.
            tick(page, newest_first[0])
            page.wait_for_function(
                "!document.querySelector('#runs-delete').disabled", timeout=30_000)
            page.click("#runs-delete")
            wait_rows(page, newest_first[1:])
            page.wait_for_timeout(2500)  # a poll later, still nothing ticked
            assert ticked(page) == []
            assert page.locator("#runs-compare").is_disabled()
            assert page.locator("#runs-delete").is_disabled()
            # Ticking one run now selects that run alone.
            pick = newest_first[2]
            tick(page, pick)
            assert ticked(page) == [pick]
            # New runs arrive at the top and push every row down: the tick stays on its run.
            exp = call(base, "POST", "/experiments", {"preset": "quick-mlp"})
            added = sorted((r["id"] for r in exp["runs"]), reverse=True)
            wait_rows(page, added + newest_first[1:])
            assert ticked(page) == [pick]
            page.click("#runs-compare")
            page.wait_for_url(re.compile(rf".*/compare\?runs={pick}$"), timeout=60_000)
        finally:
            page.close()


def test_the_table_fits_a_1400_px_window(browser, tmp_path):
    ids = seed(tmp_path, ["none", "batch", "noisy_batch", "layer"])
    with landscope_server("api", tmp_path) as base:
        # Long cells: tags (one with nowhere to wrap), a note, a queued cuda run that says
        # what it waits for.
        call(base, "PATCH", f"/runs/{ids[1]}", {"tags": ["baseline", "paper:fig3", "keep"],
                                                "note": "first line of a long note " * 4})
        call(base, "PATCH", f"/runs/{ids[2]}", {"tags": ["x" * 40]})
        exp = call(base, "POST", "/experiments", {"preset": "quick-mlp",
                                                  "base": {"device": "cuda"}})
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(base + "/")
            page.wait_for_function(f"({ROWS})().length === {len(ids) + len(exp['runs'])}",
                                   timeout=60_000)
            box = page.evaluate("""() => { const t = document.querySelector(
                '#runs-table .dash-spreadsheet-container');
                return [t.scrollWidth, t.clientWidth, document.documentElement.clientWidth]; }""")
            scroll, client, window = box
            assert scroll <= client <= window, box
            for col in ("created", "csv"):  # the last columns, in view without scrolling
                right = page.evaluate(f"""() => document.querySelector(
                    '#runs-table th[data-dash-column="{col}"]').getBoundingClientRect().right""")
                assert right <= window, (col, right, window)
            # Nothing cut off: every cell's text fits inside it (wrapped).
            clipped = page.evaluate("""() => [...document.querySelectorAll(
                '#runs-table td.dash-cell')].filter(td => td.scrollWidth > td.clientWidth + 1)
                .map(td => td.dataset.dashColumn + ': ' + td.innerText)""")
            assert clipped == [], clipped
        finally:
            page.close()
