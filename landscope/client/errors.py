"""The one exception the notebook client raises for an API that said no (or said nothing).

It carries what a caller branches on (the HTTP status) and what a person reads (the API's
`detail`; for a 422 every field path with its message, e.g. `query.max_points: ...`).
"""

from __future__ import annotations

from typing import Any


class LandscopeError(Exception):
    """A non-2xx answer from the API, or none at all (`status` None: refused, reset, timed out).

    `detail` is the API's `detail` as sent (a string, or for a 422 a list of
    {"loc": [...], "msg": ...}); `field_errors` pairs each field path with its message."""

    def __init__(self, status: int | None, detail: Any, *, method: str = "", url: str = ""):
        self.status = status
        self.detail = detail
        self.method = method
        self.url = url
        where = f"{method} {url}: " if method else ""
        code = "no answer" if status is None else str(status)
        super().__init__(f"{where}{code}: {self.message}")

    @property
    def field_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(loc, msg) of each error of a 422 body; empty for other answers."""
        if not isinstance(self.detail, list):
            return []
        return [(tuple(e.get("loc") or ()), str(e.get("msg", "")))
                for e in self.detail if isinstance(e, dict)]

    @property
    def message(self) -> str:
        """A sentence for any shape of `detail`: a 422 lists `a.b.c: msg` per field."""
        if isinstance(self.detail, list):
            parts = [f"{'.'.join(str(p) for p in loc)}: {msg}" if loc else msg
                     for loc, msg in self.field_errors]
            return "; ".join(parts) or str(self.detail)
        return str(self.detail)
