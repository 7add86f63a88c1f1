"""The worker's Celery app: `celery -A worker.celery_app worker` (or `landscope worker`).

One worker process trains one run at a time on one device, in its main thread: the pool is
solo (a forked child of a process that has touched torch can deadlock in its thread pools,
and a GPU wants one run per process anyway), prefetch is 1 and acks are late (server/queue.py),
so a message is only acknowledged once its run has ended, and a crashed worker's run is
redelivered and resumed from its checkpoint.

The device comes from settings.worker_device ('auto' picks the first GPU if there is one), or
from `landscope worker --device` through configure(). The worker consumes its device kind's
queue and the shared one (server.queue.worker_queues). Signals keep the workers table current
and turn a shutdown request into a stop at the next step of the running run.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass, field

import torch
from celery import signals
from kombu import Exchange, Queue

from server.db.session import make_engine, make_sessionmaker
from server.queue import make_celery, worker_queues
from server.settings import get_settings
from worker.engine import plugins
from worker.engine.state import resolve_device
from worker.heartbeat import WorkerHeartbeat

log = logging.getLogger(__name__)


def resolve_worker_device(name: str) -> str:
    """'auto' -> 'cuda:0' when a GPU is visible, else 'cpu'; others are checked and kept."""
    device = resolve_device(name)
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return str(device)


def consumed_queues(device: str) -> list[Queue]:
    # Declared exactly as the producer's Celery declares a queue it sends to by name (a
    # direct exchange and routing key of the same name), so both agree on the bindings.
    return [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in worker_queues(device)]


@dataclass
class WorkerState:
    """What this process knows about itself; the task reads it."""

    device: str | None = None  # resolved by configure(), before the worker consumes
    shutdown: threading.Event = field(default_factory=threading.Event)
    heartbeat: WorkerHeartbeat | None = None
    _engine: object | None = None

    def engine(self):
        # Created on first use, in the worker process (never at import in a producer).
        if self._engine is None:
            settings = get_settings()
            self._engine = make_engine(
                settings.db_url, statement_timeout=settings.worker_db_statement_timeout_seconds,
                connect_timeout=settings.db_connect_timeout_seconds,
            )
        return self._engine


app = make_celery(get_settings())
app.conf.update(include=["worker.tasks", "worker.analysis_tasks"], worker_pool="solo",
                worker_concurrency=1)
STATE = WorkerState()


def configure(device: str) -> None:
    """Train on `device` (auto|cpu|cuda:N) and consume its queues; call before the worker
    starts (`landscope worker` does; a bare `celery worker` gets settings.worker_device).
    Raises RuntimeError for a CUDA device on a machine without one."""
    STATE.device = resolve_worker_device(device)
    app.conf.task_queues = consumed_queues(STATE.device)


@signals.celeryd_init.connect
def _configure_from_settings(**_kw) -> None:
    # The first worker signal, before the worker selects its queues.
    if STATE.device is None:
        try:
            configure(get_settings().worker_device)
        except RuntimeError as exc:
            raise SystemExit(f"landscope worker: {exc}") from None  # Celery logs Exceptions


def limit_torch_threads(device: str) -> None:
    """The process's torch threads between runs and for analyses: LANDSCOPE_TORCH_THREADS
    (default 1, 0 = every core; worker/engine/threads.py says why). Each run sets its own
    count (its spec's `threads`, else this setting) while it trains and gives this back."""
    from worker.engine.threads import resolve_threads

    torch.set_num_threads(resolve_threads(None, get_settings().torch_threads))


@signals.worker_init.connect
def _force_solo_pool(sender, **_kw) -> None:
    # Runs before the worker resolves its pool class, so this wins over a --pool option.
    pool = sender.pool_cls
    if "solo" not in str(getattr(pool, "__module__", pool)):
        # Logging is not set up yet at this point: say it on stderr.
        print(f"landscope worker: pool {pool!r} replaced by solo (forked children of a torch "
              "process deadlock)", file=sys.stderr)
    sender.pool_cls, sender.concurrency = "solo", 1
    limit_torch_threads(STATE.device)


def installed_plugins() -> dict:
    """The plug-ins this worker can run, for its row in `workers`: the server accepts a spec
    naming a plug-in only when an online worker reports it (server/services/plugins.py)."""
    try:
        return plugins.installed()
    except Exception as exc:  # a broken distribution's metadata must not stop the worker
        log.error("could not list the installed plug-ins: %s", exc)
        return {"models": {}, "datasets": {}, "problems": [f"listing failed: {exc}"]}


@signals.worker_ready.connect
def _register(sender, **_kw) -> None:
    s = get_settings()
    queues = sorted(q.name for q in sender.task_consumer.queues)
    STATE.heartbeat = WorkerHeartbeat(
        make_sessionmaker(STATE.engine()), name=sender.hostname, device=STATE.device,
        queues=queues, interval=s.heartbeat_seconds,
        info={"torch": torch.__version__, "threads": torch.get_num_threads(),
              "plugins": installed_plugins()},
    )
    try:
        STATE.heartbeat.start()
    except Exception as exc:  # the worker can still train; the API just cannot list it
        log.error("could not register the worker in the database: %s", exc)
    log.info("landscope worker %s on %s consuming %s", sender.hostname, STATE.device, queues)


@signals.worker_shutting_down.connect
def _stop_running_run(**_kw) -> None:
    # Runs in the signal handler, in the main thread, possibly in the middle of a step:
    # only set a flag; the run's should_stop picks it up before its next step.
    STATE.shutdown.set()


@signals.worker_shutdown.connect
def _unregister(**_kw) -> None:
    if STATE.heartbeat is not None:
        STATE.heartbeat.stop()
