"""Requests released at the same moment from many threads, each with its own TestClient (its
own event loop) over one app: the handlers run at once on separate database connections, as
under a real server with many clients."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient


def concurrently(app: FastAPI, n: int, send: Callable[[TestClient, int], httpx.Response]
                 ) -> list[httpx.Response]:
    """`send(client, i)` for i in range(n), all released at once from n threads. The app's
    lifespan must be running (a TestClient entered around the call)."""
    start = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        client = TestClient(app)  # not entered: shares the app's engine and broker
        start.wait(timeout=60)
        return send(client, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))
