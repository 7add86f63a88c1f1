"""Every request answers within REQUEST_TIMEOUT_SECONDS: 503 if the application has not begun
its answer by then.

A pure ASGI middleware. The application runs as a task of its own; if it has not started its
response by the deadline, the middleware answers 503 (JSON, naming what the request was
waiting on when that is known) and leaves the task to finish in the background, its output
discarded: its thread cannot be stopped, but it can no longer commit (server/deadline.py), and
the database watchdog cuts a call that hangs. A deadline that finds a commit in flight waits
for its outcome (the watchdog bounds it): a request whose changes were committed is not
answered as if nothing happened. Begun answers (a long CSV export) are never cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.deadline import COMMITTED, COMMITTING, Deadline, RequestExpired, current

log = logging.getLogger("landscope.api")

RETRY_AFTER_S = 5


class Stragglers:
    """Requests answered 503 whose application task still runs; waited for at shutdown."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()

    def add(self, task: asyncio.Task) -> None:
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a request answered 503 ended later with %r", task.exception())

    async def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` s for every straggler; whether none is left."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        return not self.tasks


class RequestTimeout:
    def __init__(self, app: ASGIApp, seconds: float, commit_grace: float,
                 stragglers: Stragglers) -> None:
        self.app = app
        self.seconds = seconds
        self.commit_grace = commit_grace  # how long a commit in flight may still take
        self.stragglers = stragglers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        started, settled = asyncio.Event(), asyncio.Event()
        deadline = Deadline(self.seconds, on_settled=lambda: _set_from_thread(loop, settled))
        taken_over = False

        async def app_send(message: Message) -> None:
            if taken_over:
                return  # the client was answered 503 already
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        token = current.set(deadline)
        try:  # the task copies the context now: the handler's threads see this deadline
            task = asyncio.ensure_future(self.app(scope, receive, app_send))
        finally:
            current.reset(token)
        try:
            await _wait_any(self.seconds, task, started)
            if not (started.is_set() or task.done()) and not await self._settle(
                deadline, task, started, settled
            ):
                taken_over = True
                self.stragglers.add(task)
                await _unavailable(deadline)(scope, receive, send)
                return
        except asyncio.CancelledError:  # the server gave up on the request: so does the app
            task.cancel()
            raise
        await task

    async def _settle(self, deadline: Deadline, task: asyncio.Task, started: asyncio.Event,
                      settled: asyncio.Event) -> bool:
        """At the deadline: whether the application may still answer itself. Only if it has
        committed (or its commit in flight succeeds) and starts its answer within the grace;
        else it can no longer commit, and the middleware answers."""
        end = asyncio.get_running_loop().time() + self.commit_grace
        while deadline.expire() == COMMITTING:
            settled.clear()  # (a commit ending from now on sets it again)
            left = end - asyncio.get_running_loop().time()
            if deadline.state != COMMITTING or left <= 0 or started.is_set():
                break
            await _wait_any(left, settled, started)
        if started.is_set() or task.done():
            return True
        if deadline.state != COMMITTED:
            return False
        await _wait_any(end - asyncio.get_running_loop().time(), task, started)
        return started.is_set() or task.done()


async def _wait_any(timeout: float, *what: asyncio.Future | asyncio.Event) -> None:
    """Wait up to `timeout` s for the first of futures ending or events being set."""
    waiters = [asyncio.ensure_future(w.wait()) for w in what if isinstance(w, asyncio.Event)]
    futures = [w for w in what if not isinstance(w, asyncio.Event)]
    try:
        await asyncio.wait({*futures, *waiters}, timeout=max(0.0, timeout),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _set_from_thread(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
        loop.call_soon_threadsafe(event.set)


def _unavailable(deadline: Deadline) -> JSONResponse:
    waiting = f" (waiting on {deadline.waiting_on})" if deadline.waiting_on else ""
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if deadline.saved_run_ids:  # committed, then stuck (the broker): as BrokerUnavailable
        ids = deadline.saved_run_ids
        return JSONResponse(
            {"detail": f"run(s) {', '.join(map(str, ids))} were saved, but the request did not "
                       f"finish within {deadline.seconds:g} s{waiting}; they will be sent "
                       "when the broker answers",
             "unsent_run_ids": ids},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers,
        )
    log.warning("request past its %g s deadline%s: answered 503", deadline.seconds, waiting)
    outcome = ("its commit was still waiting on the database: whether it took effect is "
               "unknown" if deadline.state == COMMITTING else "nothing was changed")
    return JSONResponse(
        {"detail": f"the request did not finish within {deadline.seconds:g} s{waiting}; "
                   f"{outcome}, try again later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers,
    )


def _expired(_req: Request, exc: Exception) -> JSONResponse:
    # The handler of a request answered 503 at its deadline tried to commit afterwards; this
    # answer is discarded (the client has its 503), but the error is expected, not a bug.
    log.info("%s", exc)
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


def install(app: FastAPI, seconds: float, commit_grace: float) -> Stragglers:
    """Bound every request of `app`; the stragglers, for the lifespan to wait for."""
    stragglers = Stragglers()
    app.add_exception_handler(RequestExpired, _expired)
    app.add_middleware(RequestTimeout, seconds=seconds, commit_grace=commit_grace,
                       stragglers=stragglers)
    return stragglers

