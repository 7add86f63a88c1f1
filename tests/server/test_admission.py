"""The queue limit holds under concurrent requests, on SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.api.app import create_app
from server.db.models import ACTIVE_STATUSES, AdmissionLock, Run
from server.db.session import make_engine
from server.settings import Settings
from tests.support.concurrency import concurrently


def active_runs(settings: Settings) -> int:
    engine = make_engine(settings.db_url)
    try:
        with engine.connect() as conn:
            return conn.scalar(
                select(func.count()).select_from(Run).where(Run.status.in_(ACTIVE_STATUSES))
            )
    finally:
        engine.dispose()


def test_concurrent_experiments_never_pass_the_queue_limit(backend):
    settings = backend.model_copy(update={"max_queued_runs": 200})
    body = {"base": {"steps": 5, "device": "cpu"}, "vary": {"seed": list(range(64))}}
    app = create_app(settings)
    with TestClient(app):  # the lifespan: engine, sessions, broker
        answers = concurrently(
            app, 10, lambda c, _: c.post("/api/v1/experiments", json=body)
        )
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 3 + [429] * 7, [r.text for r in answers if r.status_code >= 500]
    assert sum(len(r.json()["runs"]) for r in answers if r.status_code == 201) == 192
    assert active_runs(settings) == 192


def test_concurrent_runs_fill_the_queue_exactly(backend):
    settings = backend.model_copy(update={"max_queued_runs": 5})
    app = create_app(settings)
    with TestClient(app):
        answers = concurrently(
            app, 12, lambda c, i: c.post("/api/v1/runs", json={"spec": {"seed": i, "steps": 5}})
        )
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 5 + [429] * 7, [r.text for r in answers if r.status_code >= 500]
    assert active_runs(settings) == 5
    engine = make_engine(settings.db_url)
    with engine.connect() as conn:  # refused requests rolled their lock update back
        assert conn.scalar(select(AdmissionLock.admitted)) == 5
    engine.dispose()
