"""The request body limit: 413 before anything parses a body larger than MAX_BODY_BYTES.

A pure ASGI middleware around the whole application, the dashboard mounted at / included. A
declared Content-Length over the limit is refused at once, unread. Any other body (chunked, or
a Content-Length the bytes outrun) is read first, counted, and refused as soon as the count
passes the limit; a body within it is then replayed to the application, which reads it as
usual. Nothing downstream streams uploads, so reading first costs nothing: FastAPI and Flask
read the whole body before parsing it anyway.

Routes may have limits of their own (`routes`: path pattern, bytes, the setting's name): the
SDK's ingest route takes metric batches up to LANDSCOPE_MAX_INGEST_MB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# POST /api/v1/runs/{id}/ingest (server/api/routers/sdk.py)
INGEST_PATH = re.compile(r"^/api/v1/runs/[^/]+/ingest/?$")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int,
                 routes: Sequence[tuple[re.Pattern[str], int, str]] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = list(routes)

    def _limit(self, scope: Scope) -> tuple[int, str]:
        path = scope.get("path", "")
        for pattern, max_bytes, setting in self.routes:
            if pattern.match(path):
                return max_bytes, setting
        return self.max_bytes, ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        if self._declared(scope) > limit:
            await self._refuse(send, limit, setting)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nobody to answer
                return
            size += len(message.get("body", b""))
            if size > limit:
                await self._refuse(send, limit, setting)
                return
            messages.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _declared(scope: Scope) -> int:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0  # the server rejects a malformed length before we see it
        return 0

    async def _refuse(self, send: Send, limit: int, setting: str) -> None:
        named = f" ({setting})" if setting else ""
        body = json.dumps({"detail": f"the request body is over the server's limit of "
                                     f"{limit} bytes{named}"}).encode()
        # Connection: close, since the rest of the body stays unread on the connection.
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})
