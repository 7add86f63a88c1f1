"""End to end in headless Debian chromium against `landscope api` (API and dashboard, embedded
SQLite and broker; no worker: nothing is launched): the New experiment page fits a 1400 px and
a 1280 px window with its cost box filled, and what a field says as it is typed is what the
browser sends (a number input would send nothing for -5 or 2.5, read as "required"), this
server's limits included, before any launch; several seeds are costed as one run each."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.served import landscope_server

pytestmark = pytest.mark.slow

# Widths the page must not scroll sideways at: the document, and the cost box's tables
# against the card that holds them.
OVERFLOW = """() => {
  const card = document.querySelector('.cost-card').getBoundingClientRect();
  const tables = [...document.querySelectorAll('.cost-card table')]
    .map(t => t.getBoundingClientRect().right);
  return {page: document.documentElement.scrollWidth, window: window.innerWidth,
          card: card.right, tables: tables};
}"""


def _says(page, field: str, text: str) -> None:
    """Wait until the field's error reads exactly `text`."""
    page.wait_for_function(
        f"document.querySelector('#err-{field}')?.innerText === {json.dumps(text)}",
        timeout=60_000)


def _type(page, field: str, text: str) -> None:
    page.fill(f"#new-{field}", text)


@contextlib.contextmanager
def _watched_page(browser) -> Iterator[tuple[Any, list[str]]]:
    """A 1400 px page and the script errors and failed callbacks it logs (none allowed)."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield page, errors
    finally:
        page.close()


def test_the_form_fits_the_window_and_its_fields_say_what_they_take(browser, tmp_path,
                                                                    shots):
    with landscope_server("api", tmp_path) as base, _watched_page(browser) as (page, errors):
        page.goto(base + "/new")
        page.wait_for_selector("#new-cost-total", timeout=120_000)
        for width in (1400, 1280):
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_timeout(200)
            box = page.evaluate(OVERFLOW)
            assert box["page"] <= box["window"] == width, box
            assert all(right <= box["card"] + 0.5 for right in box["tables"]), box
        shots(page, "new-experiment-1280", full_page=True)
        page.set_viewport_size({"width": 1400, "height": 900})

        for typed, message in [("-5", "a whole number ≥ 1"), ("2.5", "a whole number ≥ 1"),
                               ("", "required"),
                               ("1e12", "at most 200,000 steps on this server "
                                "(LANDSCOPE_MAX_STEPS)"),
                               ("500000", "at most 200,000 steps on this server "
                                "(LANDSCOPE_MAX_STEPS)")]:
            _type(page, "steps", typed)
            _says(page, "steps", message)
        _type(page, "steps", "100")
        _says(page, "steps", "")
        _type(page, "depth", "0")
        _says(page, "depth", "a whole number ≥ 1")
        _type(page, "depth", "6")
        _type(page, "seed", "-3")
        _says(page, "seed", "one or more whole numbers ≥ 0, comma-separated")
        # A limit only the server computes (the widest layer), at the field as typed.
        _type(page, "seed", "0")
        _type(page, "width", "100000")
        page.wait_for_function("document.querySelector('#err-width')?.innerText"
                               ".includes('LANDSCOPE_MAX_WIDTH')", timeout=60_000)
        _type(page, "width", "128")
        _says(page, "width", "")
        # Several seeds: one run per seed and normalisation, costed by the server too.
        _type(page, "seed", "0, 1, 2")
        page.wait_for_function("document.querySelector('#new-cost-total')?.innerText"
                               ".includes('all 6 runs')", timeout=60_000)
        assert "6 runs" in page.inner_text("#new-cost")
        assert page.evaluate(OVERFLOW)["page"] <= 1400
        shots(page, "new-experiment-seeds", full_page=True)
        assert errors == [], errors


def test_numerics_and_snapshots_set_in_the_form_are_the_launched_runs_specs(browser, tmp_path):
    """Precision, determinism, threads, the optimiser and snapshots are chosen on the page
    and reach every run the launch creates (no worker: the runs stay queued)."""
    with landscope_server("api", tmp_path) as base, _watched_page(browser) as (page, errors):
        page.goto(base + "/new")
        page.wait_for_function("document.querySelector('#new-steps')?.value === '800'",
                               timeout=120_000)
        # bf16 autocast with float64 is refused at its field before any launch
        page.check("#new-bf16 input[type=checkbox]")
        _type(page, "momentum", "0.9")
        page.click("#new-dtype label:has-text('float64')")
        _says(page, "dtype", "bf16 autocast applies to float32 runs only; "
              "set dtype=float32")
        page.uncheck("#new-bf16 input[type=checkbox]")
        _says(page, "dtype", "")
        page.check("#new-deterministic input[type=checkbox]")
        _type(page, "threads", "0")
        _says(page, "threads", "a whole number ≥ 1, or empty for the worker's default")
        _type(page, "threads", "1")
        _type(page, "snapshot_every", "200")
        # Adam: no momentum to set, the field goes (and what it held is not sent)
        page.click("#new-optimizer label:has-text('Adam')")
        page.wait_for_selector("#field-momentum", state="hidden", timeout=60_000)
        _type(page, "steps", "400")
        _says(page, "steps", "")
        page.click("#new-launch")
        page.wait_for_url(re.compile(r".*/experiments/\d+$"), timeout=120_000)
        exp = int(page.url.rsplit("/", 1)[1])
        runs = httpx.get(f"{base}/api/v1/runs", params={"experiment_id": exp},
                         timeout=30).json()["items"]
        specs = [r["spec"] for r in runs]
        assert len(specs) == 2 and {s["norm"] for s in specs} == {"none", "batch"}
        for s in specs:
            assert (s["dtype"], s["bf16"], s["deterministic"], s["threads"]) == (
                "float64", False, True, 1), s
            assert (s["optimizer"], s["momentum"], s["steps"]) == ("adam", 0.0, 400), s
            assert s["snapshots"]["every"] == 200, s
        assert errors == [], errors
