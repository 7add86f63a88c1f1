"""The Celery producer: the app configuration shared with the workers, and enqueueing.

The server only *sends* tasks by name, so it never imports the worker (or torch). Runs are
enqueued after the transaction that created them commits: a task can never see a run row that
does not exist yet, and a broker failure leaves the run in the database, queued and
unsent (enqueued_at NULL), for the reconciler to send later.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from server.settings import Settings

RUN_TASK = "landscope.run"
# Analyses (worker/analysis_tasks.py): one prepare per analysis, then one task per grid chunk.
ANALYSIS_PREPARE_TASK = "landscope.analysis.prepare"
ANALYSIS_CHUNK_TASK = "landscope.analysis.chunk"
# A queue per device kind; "auto" runs go to the shared queue that every worker consumes.
QUEUES = {"cpu": "landscope.cpu", "cuda": "landscope.gpu", "auto": "landscope.any"}
# Who consumes each queue, in words: what a run in it waits for while no online worker does.
CONSUMERS = {QUEUES["cpu"]: "a cpu worker", QUEUES["cuda"]: "a cuda worker",
             QUEUES["auto"]: "a worker"}


def queue_for(device: str) -> str:
    """The queue of a run whose spec asks for `device` (auto, cpu, cuda or cuda:N)."""
    return QUEUES["cuda" if device.startswith("cuda") else device]


def worker_queues(device: str) -> list[str]:
    """What a worker on `device` consumes: its own kind's queue and the shared one."""
    return [QUEUES["cuda" if device.startswith("cuda") else "cpu"], QUEUES["auto"]]


def make_celery(settings: Settings) -> Celery:
    app = Celery("landscope", broker=settings.broker, set_as_current=False)
    options: dict = {}
    if settings.broker.startswith(("redis://", "rediss://")):
        # A message not acked within the visibility timeout is redelivered. Runs can take
        # hours, so a redelivery while the first delivery still runs must be harmless: the
        # task checks the run's heartbeat and leaves a live run alone (worker/tasks.py).
        options = {"visibility_timeout": 3600, "socket_connect_timeout": 3, "socket_timeout": 10}
        if settings.broker_key_prefix:
            # kombu prefixes every key it touches: queues, bindings, the unacked hash.
            options["global_keyprefix"] = settings.broker_key_prefix
    app.conf.update(
        task_ignore_result=True,  # results live in the database, not in a result backend
        task_acks_late=True,  # a worker that dies mid-run leaves the message to redeliver
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # one run at a time per worker process
        task_default_queue=QUEUES["auto"],
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


def send_run(app: Celery, run_id: int, queue: str) -> None:
    """Hand one run to the broker; raises kombu's OperationalError when it is unreachable."""
    app.send_task(
        RUN_TASK,
        args=[run_id],
        queue=queue,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
    )


def send_analysis_prepare(app: Celery, analysis_id: int, queue: str) -> None:
    """Hand an analysis to the broker (its prepare task); raises as send_run does."""
    app.send_task(ANALYSIS_PREPARE_TASK, args=[analysis_id], queue=queue, retry=True,
                  retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5})


def send_analysis_chunk(app: Celery, analysis_id: int, step: int, chunk: int,
                        queue: str) -> None:
    """One chunk of grid points of one analysed step (server.analysis_spec.chunks)."""
    app.send_task(ANALYSIS_CHUNK_TASK, args=[analysis_id, step, chunk], queue=queue,
                  retry=True,
                  retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5})


def declare_queues(app: Celery) -> None:
    """(Re)declare every queue and its binding, past kombu's cache of what it declared.

    After Redis loses its keys (a restart without persistence, a flush), a publish to a queue
    whose binding key is gone is dropped without an error; kombu would not declare it again
    on its own, since it remembers having done so. The reconciler calls this before resending.
    """
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for name in QUEUES.values():
            Queue(name, Exchange(name), routing_key=name).bind(channel).declare()
