"""The reconciler against the real brokers: PostgreSQL + Redis, SQLite + the embedded broker.

The broker losing messages is simulated the way it happens: deleting every key of the test's
own broker key prefix (a Redis restart without persistence, seen by this broker alone), or a
delivery that never comes back (kombu's SQL transport hides a delivered message for good).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis
from sqlalchemy import text, update

from server.broker_inspect import live_run_ids, run_id_of
from server.db.models import Run, utcnow
from server.db.session import make_engine, make_sessionmaker
from server.queue import QUEUES, declare_queues, make_celery, queue_for, send_run
from server.services.errors import BrokerUnavailable
from server.services.reconcile import GRACE_SECONDS, reconcile
from server.services.runs import send_runs
from server.spec import RunSpec
from tests.conftest import REDIS_URL, RedisSpace

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
        with redis.Redis.from_url(settings.broker) as r:  # this test's keys only
            keys = list(r.scan_iter(match=settings.broker_key_prefix + "*"))
            assert keys and r.delete(*keys) == len(keys)
    else:
        engine = make_engine(settings.broker.removeprefix("sqla+"))
        with engine.begin() as c:  # as if a worker took them and died
            c.execute(text("UPDATE kombu_message SET visible = false"))
        engine.dispose()


def test_messages_the_broker_lost_are_sent_again(env):
    settings, factory, app = env
    ids = add_runs(factory, app, 3)
    assert live_run_ids(settings) == set(ids)
    lose_messages(settings)
    assert live_run_ids(settings) == set()
    age(factory, ids, GRACE_SECONDS + 5)
    out = reconcile(factory, app, settings)
    assert out.resent == ids and out.broker_view
    assert live_run_ids(settings) == set(ids)
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
    assert live_run_ids(settings) == {stale}


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


class ForeignKeys:
    """Keys of someone else's in the test Redis database: another deployment's broker sharing
    it, a near miss of a test's prefix. After the test's own cleanup they must be intact."""

    def __init__(self) -> None:
        self.client = redis.Redis.from_url(REDIS_URL)
        self.values: dict[str, bytes] = {}
        self.spaces: list[RedisSpace] = []

    def add(self, key: str, value: bytes) -> None:
        assert self.client.set(key, value, nx=True), f"{key} exists already"
        self.values[key] = value

    def check_and_remove(self) -> None:
        try:
            assert {k: self.client.get(k) for k in self.values} == self.values
            for space in self.spaces:  # and the test's own keys are all gone
                assert space.own_keys() == [], space.prefix
        finally:
            if self.values:
                self.client.delete(*self.values)
            self.client.close()


@pytest.fixture
def foreign_keys():
    """Request it before redis_space: torn down after it, it sees what its cleanup left."""
    keys = ForeignKeys()
    yield keys
    keys.check_and_remove()


def test_a_test_deletes_its_own_redis_keys_and_no_other(foreign_keys, redis_space, tmp_path):
    tag = uuid.uuid4().hex[:12]
    foreign_keys.add(f"someone-{tag}:{QUEUES['auto']}", b"another deployment's message")
    foreign_keys.add(redis_space.prefix.rstrip(":"), b"a near miss of this test's prefix")
    foreign_keys.spaces.append(redis_space)
    settings = make_settings(tmp_path, "sqlite://", redis_space.url,
                             broker_key_prefix=redis_space.prefix)
    app = make_celery(settings)
    try:
        send_run(app, 7, QUEUES["auto"])
        declare_queues(app)
        assert live_run_ids(settings) == {7}  # read under the prefix, as kombu wrote it
    finally:
        app.close()
    names = {k.decode() for k in redis_space.own_keys()}
    assert {redis_space.prefix + QUEUES["auto"],
            f"{redis_space.prefix}_kombu.binding.{QUEUES['auto']}"} <= names
    # redis_space deletes these after the test; foreign_keys then checks the rest survived.
