"""Liveness in the database: the workers table, and the lease a worker holds on its run.

WorkerHeartbeat registers a worker process in `workers` and touches `last_seen` every
heartbeat_seconds from a daemon thread, so the API can list who is online and what each runs.

RunLease is the run row's side: a daemon thread that, about twice a second, writes the run's
progress (step, last_loss) and heartbeat_at, and reads cancel_requested. Doing it off the
training thread keeps the heartbeat fresh through one slow step (a big probe), keeps database
round trips out of the step loop, and caps them at one per tick however fast steps are.
Every write is fenced by the attempt number the worker claimed the run with: if another
worker took the run over (our heartbeat had gone stale), the update matches no row, the
lease is `lost`, and this worker stops without touching the row again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from server.db.models import Run, WorkerRecord, utcnow
from server.db.session import transaction

log = logging.getLogger(__name__)


class WorkerHeartbeat:
    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        name: str,
        device: str,
        queues: list[str],
        interval: float,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.factory = factory
        self.name = name
        self.device = device
        self.queues = queues
        self.interval = interval
        self.info = info
        self.current_run_id: int | None = None  # read by the thread; set by the task
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self) -> None:
        """Insert or refresh this worker's row (a restarted worker keeps its name)."""
        now = utcnow()
        with transaction(self.factory) as s:
            s.merge(
                WorkerRecord(
                    name=self.name, hostname=socket.gethostname(), pid=os.getpid(),
                    device=self.device, queues=list(self.queues), info=self.info,
                    current_run_id=None, started_at=now, last_seen=now, stopped_at=None,
                )
            )

    def beat(self) -> None:
        with transaction(self.factory) as s:
            s.execute(
                update(WorkerRecord)
                .where(WorkerRecord.name == self.name)
                .values(last_seen=utcnow(), current_run_id=self.current_run_id)
            )

    def start(self) -> None:
        self.register()
        self._thread = threading.Thread(target=self._loop, name="worker-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and mark the worker stopped (best effort: the DB may be gone)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with transaction(self.factory) as s:
                s.execute(
                    update(WorkerRecord)
                    .where(WorkerRecord.name == self.name)
                    .values(last_seen=utcnow(), stopped_at=utcnow(), current_run_id=None)
                )
        except Exception as exc:
            log.warning("worker %s: could not record the shutdown: %s", self.name, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # a database blip must not kill the thread
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)


class RunLease:
    """Progress, heartbeat and the cancel flag of one claimed run (see the module docstring)."""

    def __init__(
        self, factory: sessionmaker[Session], run_id: int, attempt: int, *, interval: float = 0.5
    ) -> None:
        self.factory = factory
        self.run_id = run_id
        self.attempt = attempt
        self.interval = interval
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()
        self.step: int | None = None
        self.last_loss: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"run-lease-{run_id}", daemon=True)

    def progress(self, done: int, total: int, loss: float) -> None:
        """The engine's progress callback: called every step, so it only remembers."""
        self.step, self.last_loss = done, loss

    def should_stop(self) -> bool:
        return self.cancel_requested.is_set() or self.lost.is_set()

    def fence(self):
        """The rows this lease may write: its run, still running under its attempt."""
        return (Run.id == self.run_id, Run.attempts == self.attempt, Run.status == "running")

    def beat(self) -> None:
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        step, loss = self.step, self.last_loss  # one read: the engine may move on meanwhile
        if step is not None:
            values.update(step=step, last_loss=loss if loss is None else float(loss))
        with transaction(self.factory) as s:
            hit = s.execute(update(Run).where(*self.fence()).values(**values)).rowcount
            cancel = s.scalar(select(Run.cancel_requested).where(Run.id == self.run_id))
        if not hit:
            log.warning("run %s: lease of attempt %s lost", self.run_id, self.attempt)
            self.lost.set()
        if cancel:
            self.cancel_requested.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # keep trying; a long outage ends in a takeover
                log.warning("run %s: heartbeat failed: %s", self.run_id, exc)
