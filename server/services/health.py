"""/health answers within its budget (1.5 s by default) whatever the database or the broker does.

Both checks run at once, each in a thread of its own (never the request threadpool, which
stuck requests may have filled), and each is given the budget (Settings.health_budget_seconds);
a check that has not answered by then reports its component as not answering. A component
whose last check is still stuck gets no second one: every /health meanwhile reports it not
answering, so a load balancer polling a hung database piles up no threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from celery import Celery
from sqlalchemy import Engine

from server.schemas import ComponentHealth, HealthOut
from server.services.system import check_broker, check_database


class ComponentCheck:
    """One component's check: at most one in flight, shared by whoever asks meanwhile."""

    def __init__(self, name: str, check: Callable[[], ComponentHealth]) -> None:
        self.name = name
        self._check = check
        self._lock = threading.Lock()
        self._inflight: Future[ComponentHealth] | None = None
        self._since = 0.0

    def start(self) -> tuple[Future[ComponentHealth], float]:
        """The check in flight (a new one if none is): its future and when it began."""
        with self._lock:
            if self._inflight is None or self._inflight.done():
                future: Future[ComponentHealth] = Future()
                future.set_running_or_notify_cancel()  # a waiter's timeout cannot cancel it
                self._inflight, self._since = future, time.monotonic()
                threading.Thread(target=self._run, args=(future,), daemon=True,
                                 name=f"health-{self.name}").start()
            return self._inflight, self._since

    @property
    def latest(self) -> Future[ComponentHealth] | None:
        """The check in flight, or the last one; None before the first."""
        return self._inflight

    def _run(self, future: Future[ComponentHealth]) -> None:
        try:
            future.set_result(self._check())
        except BaseException as exc:  # noqa: BLE001 - a failed check is an answer too
            future.set_result(ComponentHealth(ok=False, error=f"{type(exc).__name__}: {exc}"))

    async def result(self, budget: float) -> ComponentHealth:
        future, since = self.start()
        wrapped = asyncio.wrap_future(future)
        done, _ = await asyncio.wait({wrapped}, timeout=budget)
        if done:
            return wrapped.result()
        waited = time.monotonic() - since
        return ComponentHealth(ok=False, error=f"not answering (no answer for {waited:.1f} s)")


class HealthMonitor:
    def __init__(self, engine: Engine, celery: Celery, budget: float) -> None:
        self.budget = budget
        self.database = ComponentCheck("database", lambda: check_database(engine))
        self.broker = ComponentCheck("broker", lambda: check_broker(celery))

    def warm(self) -> None:
        """Start both checks and return: the first check of each pays for connecting (and on
        the embedded broker for creating its tables), which a /health right after startup
        would otherwise have to fit in its budget. A /health meanwhile shares them."""
        self.database.start()
        self.broker.start()

    async def check(self) -> HealthOut:
        db, broker = await asyncio.gather(self.database.result(self.budget),
                                          self.broker.result(self.budget))
        return HealthOut(status="ok" if db.ok and broker.ok else "unavailable", database=db,
                         broker=broker)
