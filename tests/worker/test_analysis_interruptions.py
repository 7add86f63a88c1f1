"""Analyses whose tasks are interrupted, called in this process: cancelled between chunks, a
worker shutting down handing its tasks back, a broken directions file failing the analysis with
its error, and the reconciler resending what a silent analysis misses or a queued analysis whose
message was lost (embedded broker and Redis).
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, update

from server.db.models import Analysis
from server.queue import make_celery, send_analysis_prepare
from server.services import analyses
from server.services.analysis_reconcile import reconcile_analyses, waiting_tasks
from tests.worker.analysis_env import (
    SURFACE,
    env_fixture,  # noqa: F401 - the env fixture
)
from worker.analysis_runner import REQUEUE, JobCache, prepare, run_chunk


def test_a_cancelled_analysis_stops_between_chunks(env, make_run):
    run_id = env.train(make_run)
    a = env.create(run_id, **SURFACE)
    sent = []
    prepare(a.id, settings=env.settings, engine=env.engine, worker="w", device="cpu",
            send_chunk=lambda *x: sent.append(x[:3]), jobs=JobCache())
    run_chunk(*sent[0], settings=env.settings, engine=env.engine, device="cpu",
              jobs=JobCache())
    with env.factory() as s:
        analyses.cancel_analysis(s, a.id)
        s.commit()
    for task in sent[1:]:
        out = run_chunk(*task, settings=env.settings, engine=env.engine, device="cpu",
                        jobs=JobCache())
        assert out == "skipped: cancelled"
    got = env.analysis(a.id)
    assert got.status == "cancelled" and got.done_points == 8 and len(env.points(a.id)) == 8


def test_a_worker_shutting_down_hands_its_tasks_back(env, make_run):
    run_id = env.train(make_run)
    a = env.create(run_id, **SURFACE)
    stop, sent = threading.Event(), []
    kw = {"settings": env.settings, "engine": env.engine, "device": "cpu", "jobs": JobCache()}
    stop.set()
    assert prepare(a.id, worker="w", send_chunk=lambda *x: sent.append(x[:3]), shutdown=stop,
                   **kw) == REQUEUE
    assert env.analysis(a.id).status == "queued" and sent == []
    stop.clear()
    prepare(a.id, worker="w", send_chunk=lambda *x: sent.append(x[:3]), shutdown=stop, **kw)
    stop.set()
    assert run_chunk(*sent[0], shutdown=stop, **kw) == REQUEUE
    assert env.analysis(a.id).done_points == 0


def test_a_broken_directions_file_fails_the_analysis_with_its_error(env, make_run):
    run_id = env.train(make_run)
    a = env.create(run_id, **SURFACE)
    sent = []
    prepare(a.id, settings=env.settings, engine=env.engine, worker="w", device="cpu",
            send_chunk=lambda *x: sent.append(x[:3]), jobs=JobCache())
    analyses.directions_path(env.settings, a.id, 30).write_bytes(b"not a tensor file")
    out = run_chunk(*sent[0], settings=env.settings, engine=env.engine, device="cpu",
                    jobs=JobCache())
    got = env.analysis(a.id)
    assert out == "failed" and got.status == "failed" and "Traceback" in got.error


def test_the_reconciler_resends_what_a_silent_analysis_misses(env, make_run, tmp_path):
    run_id = env.train(make_run)
    a = env.create(run_id, **SURFACE)
    sent = []
    prepare(a.id, settings=env.settings, engine=env.engine, worker="w", device="cpu",
            send_chunk=lambda *x: sent.append(x[:3]), jobs=JobCache())
    for task in sent[:2]:
        run_chunk(*task, settings=env.settings, engine=env.engine, device="cpu",
                  jobs=JobCache())
    never = env.create(run_id, **SURFACE)  # saved, never sent
    settings = env.settings.model_copy(update={
        "stale_seconds": 60.0, "broker_url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"})
    celery = make_celery(settings)
    try:
        first = reconcile_analyses(env.factory, celery, settings, grace=0.0)
        assert first.sent == [never.id] and first.resent == {}  # a fresh heartbeat
        with env.engine.begin() as c:
            c.execute(update(Analysis).where(Analysis.id == a.id).values(heartbeat_at=None))
        second = reconcile_analyses(env.factory, celery, settings, grace=0.0)
        assert second.sent == []
        assert second.resent == {a.id: [("chunk", 30, i) for i in range(2, len(sent))]}
        assert reconcile_analyses(env.factory, celery, settings, grace=0.0).resent == {}
        # Silent again, but what it misses now waits in the queue: nothing is sent twice.
        with env.engine.begin() as c:
            c.execute(update(Analysis).where(Analysis.id == a.id).values(heartbeat_at=None))
        assert len(waiting_tasks(settings)) == 1 + len(sent) - 2
        assert reconcile_analyses(env.factory, celery, settings, grace=0.0).resent == {}
    finally:
        celery.close()


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_the_reconciler_resends_a_queued_analysis_whose_message_was_lost(
        env, make_run, tmp_path, request, broker):
    """A broker flush between the send and a worker's take leaves the analysis queued with no
    message anywhere: the reconciler sends its prepare task again, once; a message waiting, or
    delivered and not yet acknowledged, is left alone."""
    import redis

    if broker == "redis":
        space = request.getfixturevalue("redis_space")
        settings = env.settings.model_copy(update=space.settings())
    else:
        settings = env.settings.model_copy(update={
            "broker_url": f"sqla+sqlite:///{tmp_path / 'broker.db'}"})
    run_id = env.train(make_run)
    a = env.create(run_id, **SURFACE)
    celery = make_celery(settings)
    try:
        send_analysis_prepare(celery, a.id, a.queue)
        with env.engine.begin() as c:
            c.execute(update(Analysis).where(Analysis.id == a.id).values(enqueued_at=func.now()))
        assert reconcile_analyses(env.factory, celery, settings, grace=0.0).lost == []
        if broker == "redis":
            # Delivered to a worker, not acknowledged: kombu moves it to the unacked hash.
            r = redis.Redis.from_url(space.url)
            key = space.prefix + a.queue
            raw = r.lpop(key)
            r.hset(space.prefix + "unacked", "tag-1", f'[{raw.decode()}, "", "{a.queue}"]')
            assert reconcile_analyses(env.factory, celery, settings, grace=0.0).lost == []
            space.clear()  # the flush
        else:
            from sqlalchemy import create_engine, text

            broker_db = create_engine(settings.broker_url.removeprefix("sqla+"))
            with broker_db.begin() as c:
                c.execute(text("DELETE FROM kombu_message"))
            broker_db.dispose()
        assert waiting_tasks(settings, unacked=True) == set()
        assert reconcile_analyses(env.factory, celery, settings, grace=0.0).lost == [a.id]
        assert waiting_tasks(settings) == {("prepare", a.id)}
        assert reconcile_analyses(env.factory, celery, settings, grace=0.0).lost == []
    finally:
        celery.close()
