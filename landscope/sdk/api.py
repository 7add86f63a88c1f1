"""The few HTTP calls the SDK makes (create a run, ingest a batch, finish), and what their
failures mean to a caller: retry later (ServerUnreachable), or stop and say why (the others).

httpx, synchronous: the calls are made from the transport's own thread (or `landscope sync`),
never from the training loop.
"""

from __future__ import annotations

from typing import Any

import httpx

API = "/api/v1"


class SdkError(Exception):
    """Something the SDK cannot do; the message says what and what to do about it."""


class ServerUnreachable(SdkError):
    """No answer, or a 5xx/429: the server may come back, so the call is worth retrying."""


class AuthError(SdkError):
    """401/403: the token is missing or wrong. Retrying will not help."""


class Rejected(SdkError):
    """A 4xx other than auth: the server read the request and refused it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _detail(resp: httpx.Response) -> str:
    """The server's reason, with field paths for a 422 (FastAPI's {"detail": [{loc, msg}]})."""
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        return resp.text[:500]
    if isinstance(detail, list):
        parts = []
        for err in detail[:5]:
            if isinstance(err, dict):
                loc = ".".join(str(p) for p in err.get("loc", []))
                parts.append(f"{loc}: {err.get('msg', err)}")
            else:
                parts.append(str(err))
        return "; ".join(parts)
    return str(detail)


class Api:
    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0) -> None:
        if not isinstance(server, str) or not server.startswith(("http://", "https://")):
            raise ValueError(f"server must be an http:// or https:// URL, got {server!r}")
        self.server = server.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.server + API, timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                headers: dict[str, str] | None = None) -> Any:
        """The answer's JSON; raises ServerUnreachable / AuthError / Rejected."""
        try:
            resp = self.http.request(method, path, json=json, content=content, headers=headers)
        except httpx.TransportError as exc:  # refused, reset, timed out, DNS
            raise ServerUnreachable(f"cannot reach {self.server}: {exc or type(exc).__name__}"
                                    ) from None
        if resp.status_code in (401, 403):
            raise AuthError(f"{self.server} refused the token ({resp.status_code}): "
                            f"{_detail(resp)}; pass token=... (or set LANDSCOPE_API_TOKEN)")
        if resp.status_code == 429 or resp.status_code >= 500:
            raise ServerUnreachable(f"{self.server} answered {resp.status_code}: {_detail(resp)}")
        if resp.status_code >= 400:
            raise Rejected(resp.status_code, f"{method} {path} -> {resp.status_code}: "
                                             f"{_detail(resp)}")
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            # A 2xx that is not JSON: something other than Landscope answers at this URL.
            raise Rejected(resp.status_code, f"{self.server}{API}{path} did not answer JSON: "
                                             f"is this a Landscope server?") from None

    def create_run(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /sdk/runs: 201 a new run, 200 the one this client_id already made."""
        return self.request("POST", "/sdk/runs", json=payload)

    def ingest(self, run_id: int, gzipped_body: bytes) -> dict[str, Any]:
        return self.request("POST", f"/runs/{run_id}/ingest", content=gzipped_body,
                            headers={"Content-Type": "application/json",
                                     "Content-Encoding": "gzip"})

    def heartbeat(self, run_id: int, step: int | None, last_loss: float | None) -> Any:
        from landscope.sdk.wire import json_float

        beat: dict[str, Any] = {"step": step}
        if last_loss is not None:
            beat["last_loss"] = json_float(last_loss)
        return self.request("POST", f"/runs/{run_id}/ingest", json={"heartbeat": beat})

    def finish(self, run_id: int, status: str, error: str | None,
               step: int | None) -> dict[str, Any]:
        return self.request("POST", f"/runs/{run_id}/finish",
                            json={"status": status, "error": error, "step": step})
