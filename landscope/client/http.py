"""HTTP plumbing of the notebook client: base URL, token, retries of reads, errors.

Reads (GET) are retried a few times when the server cannot be reached or answers 503 (its
request deadline, a database or broker outage: docs/api.md "Errors"), waiting what its
`Retry-After` asks, within bounds; a read changes nothing, so a retry is always safe. Writes
are never retried here: the caller decides (POST /runs takes an Idempotency-Key for that).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from landscope.client.errors import LandscopeError

API_PREFIX = "/api/v1"
RETRY_STATUSES = frozenset({502, 503, 504})


def api_base(url: str) -> str:
    """`http://host:8000` or `http://host:8000/api/v1` -> the API's base URL."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the server URL must start with http:// or https://, not {url!r}")
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


def _retry_after(resp: httpx.Response | None, attempt: int, cap: float) -> float:
    header = resp.headers.get("Retry-After") if resp is not None else None
    try:
        wait = float(header) if header is not None else 0.25 * 2 ** attempt
    except ValueError:  # an HTTP date: not worth parsing for a read
        wait = 0.25 * 2 ** attempt
    return max(0.0, min(wait, cap))


class Http:
    """One connection pool, the token, and the error and retry rules for every call."""

    def __init__(self, url: str, token: str | None, *, timeout: float, retries: int,
                 max_retry_wait: float = 10.0, http: httpx.Client | None = None) -> None:
        self.base = api_base(url)
        self.token = token
        self.retries = max(0, retries)
        self.max_retry_wait = max_retry_wait
        self.http = http or httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: Any = None, headers: dict[str, str] | None = None) -> Any:
        url = self.base + path
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        params = {k: v for k, v in (params or {}).items() if v is not None}
        attempts = self.retries + 1 if method == "GET" else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                resp = self.http.request(method, url, params=params, json=json, headers=headers)
            except httpx.HTTPError as exc:
                if last:
                    raise LandscopeError(
                        None, f"the server cannot be reached ({type(exc).__name__}: {exc})",
                        method=method, url=url) from exc
                time.sleep(_retry_after(None, attempt, self.max_retry_wait))
                continue
            if resp.status_code in RETRY_STATUSES and not last:
                time.sleep(_retry_after(resp, attempt, self.max_retry_wait))
                continue
            return _answer(resp, method, url)
        raise AssertionError("unreachable")  # the last attempt returns or raises


def _answer(resp: httpx.Response, method: str, url: str) -> Any:
    if resp.status_code >= 400:
        try:
            body = resp.json()
            detail = body.get("detail", body) if isinstance(body, dict) else body
        except ValueError:
            detail = resp.text[:2000] or resp.reason_phrase
        raise LandscopeError(resp.status_code, detail, method=method, url=url)
    if resp.status_code == 204 or not resp.content:
        return None
    if "json" not in resp.headers.get("content-type", ""):
        return resp.text  # the CSV routes
    return resp.json()
