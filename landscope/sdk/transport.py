"""HttpTransport: a run's records from the training thread to the server, off that thread.

The training thread only appends a (step, keys, values) tuple to a deque (thread-safe, no
lock). A sender thread, every
`interval` seconds or as soon as `max_points` are waiting, cuts what is there into a Batch,
encodes and gzips it, writes it to the spool, POSTs it, and deletes the spooled file once the
server acknowledged it. While the server is unreachable (no answer, 5xx, 429) batches pile up
in the spool and are retried with exponential backoff, oldest first, so they arrive in order
when it returns. Heartbeats (step, last loss) go every `heartbeat_every` seconds, with or
without data; they are never spooled, so a spool drained after the run ended never makes the
server think the run is alive.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from landscope.sdk.api import Api, AuthError, Rejected, ServerUnreachable
from landscope.sdk.spool import Spool
from landscope.sdk.wire import Batch


@dataclass
class TransportOptions:
    interval: float = 0.5  # seconds between cuts: how live the dashboard is
    max_points: int = 50_000  # a cut at once past this many points waiting; also a batch's max
    heartbeat_every: float = 2.0  # the server marks a run crashed after 60 s of silence
    backoff_min: float = 0.25
    backoff_max: float = 5.0


def _warn(msg: str) -> None:
    print(f"landscope: {msg}", file=sys.stderr, flush=True)


class HttpTransport:
    def __init__(self, api: Api, run_id: int, spool: Spool,
                 options: TransportOptions | None = None) -> None:
        self.api = api
        self.run_id = run_id
        self.spool = spool
        self.opt = options or TransportOptions()
        self.rows: deque[tuple] = deque()  # scalar rows (step, keys, values); Run.log appends
        self._others: deque[tuple] = deque()  # eta records and histograms (rare)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._cutting = False
        self._backoff = 0.0
        self._retry_at = 0.0
        self._down_since: float | None = None
        self._last_beat = 0.0
        self.last_step: int | None = None
        self.last_loss: float | None = None
        self.sent_points = 0
        self.rejected = 0
        self.error: str | None = None  # why sending stopped for good (a bad token, a 409)
        self.cancel_requested = False  # the server's word: someone asked this run to stop
        self.cpu_s = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"landscope-run-{run_id}",
                                        daemon=True)
        self._thread.start()

    # -- training thread: append and return

    def put_scalars(self, step: int, keys: tuple[str, ...], values: tuple) -> None:
        """What Run.log does inline: append a row (and wake the sender past a batch)."""
        self.rows.append((step, keys, values))
        if len(self.rows) * max(1, len(keys)) >= self.opt.max_points:
            self._wake.set()

    def wake(self) -> None:
        """Cut now (a batch's worth is waiting), not at the next interval."""
        self._wake.set()

    def put_etas(self, step: int, probe: str, records: Sequence[Any]) -> None:
        self._others.append((1, step, probe, list(records)))

    def put_dists(self, step: int, records: Sequence[Any]) -> None:
        self._others.append((2, step, list(records)))

    # -- any thread

    @property
    def down(self) -> bool:
        """The server did not answer the last try."""
        return self._down_since is not None

    def pending(self) -> bool:
        return self._queued() or self._cutting or bool(self.spool.batches())

    def _queued(self) -> bool:
        return bool(self.rows) or bool(self._others)

    def spooled(self, timeout: float = 60.0) -> bool:
        """Wait until everything put so far is in the spool (durable; maybe not sent yet)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while (self._queued() or self._cutting) and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(left, 1.0))  # the sender notifies after each cut
        return not (self._queued() or self._cutting)

    def flush(self, timeout: float) -> bool:
        """Wait until everything put so far is acknowledged; False if `timeout` passed first
        (it is all in the spool then) or sending stopped for good."""
        deadline = time.monotonic() + timeout
        self._retry_at = 0.0  # a flush is worth an immediate try
        self._wake.set()
        with self._idle:
            while self.pending() and self.error is None and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle.wait(min(left, 0.1))
        return not self.pending()

    def close(self, timeout: float) -> bool:
        """Flush, then stop the sender; True when nothing is left unacknowledged."""
        done = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(max(5.0, self.opt.interval * 4))
        # Anything still queued goes to the spool too, even past a sender stuck in a request
        # (Spool.put is thread-safe; each cut pops its own items).
        self._cut()
        return done and not self.pending()

    # -- sender thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.opt.interval)
            self._wake.clear()
            try:
                self._cut()
                with self._idle:  # spooled() waits for this, not for the network
                    self._idle.notify_all()
                if self.error is None:
                    self._send_spooled()
                    self._maybe_heartbeat()
            except Exception as exc:  # noqa: BLE001 - the sender must outlive any surprise
                _warn(f"the transport hit {exc!r}; batches stay in {self.spool.path}")
                self._down(repr(exc))
            self.cpu_s = time.thread_time()  # the sender's CPU so far (bench_transport.py)
            with self._idle:
                self._idle.notify_all()

    def _cut(self) -> None:
        """Everything queued into spooled batches of at most max_points."""
        q, others = self.rows, self._others
        if not q and not others:
            return
        self._cutting = True
        try:
            batch = Batch()
            popleft = q.popleft
            while q:
                # As many rows as fit the batch by the first row's width (at most 1,024: a
                # wider row further on overshoots by little), taken in C calls.
                room = self.opt.max_points - batch.points
                n = min(len(q), max(1, room // max(1, len(q[0][1]))), 1024)
                batch.add_rows([popleft() for _ in range(n)])
                if batch.points >= self.opt.max_points:
                    self._spool_batch(batch)
                    batch = Batch()
            while others:
                item = others.popleft()
                if item[0] == 1:
                    batch.add_etas(item[1], item[2], item[3])
                else:
                    batch.add_dists(item[1], item[2])
                if batch.points >= self.opt.max_points:
                    self._spool_batch(batch)
                    batch = Batch()
            if batch:
                self._spool_batch(batch)
        finally:
            self._cutting = False

    def _spool_batch(self, batch: Batch) -> None:
        if batch.last_step is not None:
            self.last_step = batch.last_step
        if batch.last_loss is not None:
            self.last_loss = batch.last_loss
        self.spool.put(batch.encode(), batch.points)

    def _send_spooled(self) -> None:
        if time.monotonic() < self._retry_at:
            return
        for path in self.spool.batches():
            try:
                answer = self.api.ingest(self.run_id, path.read_bytes())
            except ServerUnreachable as exc:
                self._down(str(exc))
                return
            except AuthError as exc:
                self.error = str(exc)
                _warn(f"{exc}. Batches stay in {self.spool.path}; "
                      f"send them later with `landscope sync {self.spool.path} --token ...`")
                return
            except Rejected as exc:
                if exc.status in (404, 409):  # the run is gone or not ours: nothing will land
                    self.error = str(exc)
                    _warn(f"the server no longer takes this run's metrics ({exc}); "
                          f"batches stay in {self.spool.path}")
                    return
                self.spool.reject(path, str(exc))  # this body only: the next ones may pass
                self.rejected += 1
                _warn(f"the server refused a batch ({exc}); kept in {self.spool.path}/rejected")
                continue
            self.sent_points += Spool.points_of(path)
            self.cpu_s = time.thread_time()  # before the ack: a flush() reader sees it
            self.spool.ack(path)
            self._up()
            self._note(answer)

    def _maybe_heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat < self.opt.heartbeat_every or now < self._retry_at:
            return
        try:
            answer = self.api.heartbeat(self.run_id, self.last_step, self.last_loss)
        except ServerUnreachable as exc:
            self._down(str(exc))
            return
        except (AuthError, Rejected):
            return  # the next batch will say why, once
        self._last_beat = now
        self._up()
        self._note(answer)

    def _note(self, answer: Any) -> None:
        if isinstance(answer, dict) and answer.get("cancel_requested") and \
                not self.cancel_requested:
            self.cancel_requested = True
            _warn("the run was asked to stop (run.cancel_requested is True); "
                  "finish it with run.finish('cancelled')")

    def _down(self, why: str) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            _warn(f"{why}; spooling to {self.spool.path} and retrying")
        self._backoff = min(self.opt.backoff_max, max(self.opt.backoff_min, self._backoff * 2))
        self._retry_at = now + self._backoff

    def _up(self) -> None:
        if self._down_since is not None:
            _warn(f"{self.api.server} is back after {time.monotonic() - self._down_since:.0f} s;"
                  " sending the spooled batches")
            self._down_since = None
        self._backoff = 0.0
        self._retry_at = 0.0
