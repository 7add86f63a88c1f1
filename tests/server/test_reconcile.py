"""The reconciler against the real brokers: PostgreSQL + Redis, SQLite + the embedded broker.

The broker losing messages is simulated the way it happens: flushing the test's own Redis
database number (a restart without persistence), or a delivery that never comes back
(kombu's SQL transport hides a delivered message for good).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from sqlalchemy import text, update

from server.broker_inspect import live_run_ids, run_id_of
from server.db.models import Run, utcnow
from server.db.session import make_engine, make_sessionmaker
from server.queue import make_celery, queue_for
from server.services.errors import BrokerUnavailable
from server.services.reconcile import GRACE_SECONDS, reconcile
from server.services.runs import send_runs
from server.spec import RunSpec

from .conftest import make_settings


@pytest.fixture
def env(backend):
    engine = make_engine(backend.db_url)
    factory = make_sessionmaker(engine)
    app = make_celery(backend)
    yield backend, factory, app
    app.close()
    engine.dispose()


def add_runs(factory, app, n: int, *, send: bool = True) -> list[int]:
    spec = RunSpec(model="mlp", dataset="digits", steps=5)
    with factory() as s, s.begin():
        runs = [Run(name=f"r{i}", spec=spec.model_dump(mode="json"), queue=queue_for("auto"),
                    total=5) for i in range(n)]
        s.add_all(runs)
        s.flush()
        if send:
            send_runs(s, app, runs)
        return [r.id for r in runs]


def age(factory, ids, seconds: float, **extra) -> None:
    """Make runs look created and sent `seconds` ago (past the reconciler's grace)."""
    past = utcnow() - timedelta(seconds=seconds)
    with factory() as s, s.begin():
        values = {"created_at": past, **extra}
        s.execute(update(Run).where(Run.id.in_(ids)).values(**values))
        s.execute(update(Run).where(Run.id.in_(ids), Run.enqueued_at.is_not(None))
                  .values(enqueued_at=past))


def lose_messages(settings) -> None:
    if settings.broker.startswith("redis://"):
        redis.Redis.from_url(settings.broker).flushdb()  # this test's database number only
    else:
        engine = make_engine(settings.broker.removeprefix("sqla+"))
        with engine.begin() as c:  # as if a worker took them and died
            c.execute(text("UPDATE kombu_message SET visible = false"))
        engine.dispose()


def test_messages_the_broker_lost_are_sent_again(env):
    settings, factory, app = env
    ids = add_runs(factory, app, 3)
    assert live_run_ids(settings.broker) == set(ids)
    lose_messages(settings)
    assert live_run_ids(settings.broker) == set()
    age(factory, ids, GRACE_SECONDS + 5)
    out = reconcile(factory, app, settings)
    assert out.resent == ids and out.broker_view
    assert live_run_ids(settings.broker) == set(ids)
    again = reconcile(factory, app, settings)  # the messages are live now: nothing to do
    assert again.resent == [] and again.requeued == []


def test_runs_with_a_live_message_or_within_grace_are_left_alone(env):
    settings, factory, app = env
    old = add_runs(factory, app, 2)
    age(factory, old, GRACE_SECONDS + 5)
    lose_messages(settings)
    young = add_runs(factory, app, 1)  # sent a moment ago: its message is live anyway
    unsent_young = add_runs(factory, app, 1, send=False)  # its request may still send it
    out = reconcile(factory, app, settings)
    assert out.resent == old
    assert unsent_young[0] not in out.resent and young[0] not in out.resent


def test_a_run_whose_worker_went_silent_is_requeued_and_sent(env):
    settings, factory, app = env
    stale, fresh = add_runs(factory, app, 2)
    lose_messages(settings)  # both were delivered: no live message
    now = utcnow()
    with factory() as s, s.begin():
        s.execute(update(Run).where(Run.id == stale).values(
            status="running", worker="w1", heartbeat_at=now - timedelta(
                seconds=settings.stale_after_seconds + 5)))
        s.execute(update(Run).where(Run.id == fresh).values(
            status="running", worker="w2", heartbeat_at=now))
    out = reconcile(factory, app, settings)
    assert out.requeued == [stale] and out.resent == [stale]
    with factory() as s:
        a, b = s.get(Run, stale), s.get(Run, fresh)
        assert (a.status, a.worker, a.enqueued_at is not None) == ("queued", None, True)
        assert (b.status, b.worker) == ("running", "w2")
    assert live_run_ids(settings.broker) == {stale}


def test_finished_and_cancel_requested_runs_are_never_sent(env):
    settings, factory, app = env
    done, cancelling = add_runs(factory, app, 2, send=False)
    age(factory, [done, cancelling], GRACE_SECONDS + 5)
    with factory() as s, s.begin():
        s.execute(update(Run).where(Run.id == done).values(status="succeeded"))
        s.execute(update(Run).where(Run.id == cancelling).values(cancel_requested=True))
    assert reconcile(factory, app, settings).resent == []


def test_an_unreachable_broker_raises_and_keeps_runs_unsent(sqlite_backend, tmp_path):
    settings = make_settings(tmp_path, sqlite_backend.db_url, "redis://127.0.0.1:1/0")
    engine = make_engine(settings.db_url)
    factory = make_sessionmaker(engine)
    app = make_celery(settings)
    ids = add_runs(factory, app, 1, send=False)
    age(factory, ids, GRACE_SECONDS + 5)
    with pytest.raises(BrokerUnavailable):
        reconcile(factory, app, settings)
    with factory() as s:
        run = s.get(Run, ids[0])
        assert run.status == "queued" and run.enqueued_at is None
    app.close()
    engine.dispose()


def test_foreign_messages_are_not_mistaken_for_runs():
    assert run_id_of(b"not json") is None
    assert run_id_of(b'{"headers": {"task": "other.task"}, "body": "W1sxXSwge31d"}') is None
