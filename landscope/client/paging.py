"""Reading whole answers from routes that cap them, so callers never see a page boundary.

- Lists (`{items, total, limit, offset}`): offset pages, deduplicated by id (a row created
  while paging shifts the newest-first pages by one).
- Probe records and histograms (ordered by step, capped by `limit`): a step cursor. A full
  page may end part way through a step, so its last step is dropped and read again as the
  start of the next page.
- Raw metric series: the server downsamples a series whose [since, until] span is wider than
  `max_points` steps. For every point, each series that came back downsampled is read again
  in two halves of its window (first narrowed to the buckets' extent), until every part is
  raw. A window of at most PAGE_STEPS steps is never downsampled, so this ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

INT32_MAX = 2**31 - 1
PAGE_STEPS = 200_000  # steps per raw metrics window: ~5 MB of JSON per key at most
LIST_PAGE = 500  # the list routes' largest `limit`
PROBE_PAGE, PROBE_LARGEST = 100_000, 1_000_000  # /probes: a page, and its largest `limit`
HIST_PAGE, HIST_LARGEST = 10_000, 100_000  # /distributions alike
_GLOB = set("*?[")

Get = Callable[[str, dict[str, Any]], Any]


def list_pages(get: Get, path: str, params: dict[str, Any]) -> list[dict]:
    page = LIST_PAGE
    seen: set[Any] = set()
    out: list[dict] = []
    offset = 0
    while True:
        body = get(path, {**params, "limit": page, "offset": offset})
        for item in body["items"]:
            if item.get("id") not in seen:
                seen.add(item.get("id"))
                out.append(item)
        offset += len(body["items"])
        if not body["items"] or offset >= body["total"]:
            return out


def step_pages(get: Get, path: str, params: dict[str, Any], *, page: int,
               largest: int) -> list[dict]:
    """Every record of a step-ordered, `limit`-capped route from `since_step` on."""
    out: list[dict] = []
    since = params.get("since_step")
    limit = page
    while True:
        records = get(path, {**params, "since_step": since, "limit": limit})["records"]
        if len(records) < limit:
            return out + records
        last = records[-1]["step"]
        whole = [r for r in records if r["step"] != last]
        if not whole:  # one step fills the page: read it with the largest page allowed
            if limit >= largest:
                raise RuntimeError(f"{path}: step {last} alone has over {largest} records")
            limit = largest
            continue
        out.extend(whole)
        since, limit = last, page


def exact_key(key: str) -> str | None:
    """A glob that matches exactly `key` (the route reads `keys` as globs), or None when the
    key has a comma (it cannot be named in a comma-separated list)."""
    if "," in key:
        return None
    if not _GLOB & set(key):
        return key
    return "".join(f"[{c}]" if c in _GLOB else c for c in key)


def narrow(steps: list[float], lo: int, hi: int) -> tuple[int, int]:
    """The part of [lo, hi] a downsampled answer's buckets say the points lie in.

    A bucket's step is the middle of its first and last point (server/db/downsample.py), and
    the next bucket's points all come after this one's, so the first point lies within the
    gap between the first two bucket steps of the first one (and the last point likewise at
    the other end): first > steps[0] - (steps[1] - steps[0])."""
    if len(steps) < 2:
        return lo, hi
    first = math.floor(steps[0] - (steps[1] - steps[0]))
    last = math.ceil(steps[-1] + (steps[-1] - steps[-2]))
    return max(lo, first), min(hi, last)


def raw_series(get: Get, path: str, keys: str | None, since: int | None,
               until: int | None, only: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """{key: {"steps": [...], "values": [...]}} with every point in [since, until], raw;
    `only`: of these keys alone (the others in the first answer are not paged)."""
    lo, hi = since or 0, INT32_MAX if until is None else until
    first = get(path, {"keys": keys, "since_step": since, "until_step": until,
                       "max_points": PAGE_STEPS})["series"]
    if only is not None:
        first = {k: v for k, v in first.items() if k in only}
    out = {k: {"key": k, "downsampled": False, "steps": [], "values": []} for k in first}
    todo: list[tuple[str, dict[str, Any], int, int]] = [(k, s, lo, hi) for k, s in first.items()]
    while todo:
        key, s, a, b = todo.pop()
        if not s.get("downsampled"):
            out[key]["steps"].extend(s["steps"])
            out[key]["values"].extend(s["values"])
            continue
        a, b = narrow(s.get("steps") or [], a, b)
        mid = (a + b) // 2
        for part in ((mid + 1, b), (a, mid)):  # popped low half first: steps stay in order
            todo.append((key, _window(get, path, key, *part), *part))
    return out


def _window(get: Get, path: str, key: str, a: int, b: int) -> dict[str, Any]:
    name = exact_key(key)
    body = get(path, {"keys": name, "since_step": a, "until_step": b,
                      "max_points": PAGE_STEPS})["series"]
    return body.get(key) or {"key": key, "downsampled": False, "steps": [], "values": []}
