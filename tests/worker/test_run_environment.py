"""The worker's launch path: a run trains with its spec's threads, else the worker's
LANDSCOPE_TORCH_THREADS, else one, and records what it used in run.info["environment"]
(RunOut.environment), from the moment training starts."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch
from sqlalchemy import select, update

from server.db.migrate import upgrade
from server.db.models import Run
from server.db.session import make_engine, make_sessionmaker
from server.services.views import run_out
from server.settings import Settings
from worker.runner import Claim, execute_run, record_info


@pytest.fixture
def sqlite_engine(sqlite_url):
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield SimpleNamespace(url=sqlite_url, engine=engine)
    engine.dispose()


def settings(tmp_path, url, **kw) -> Settings:
    return Settings(data_dir=tmp_path, database_url=url, sink_flush_seconds=0.2,
                    heartbeat_seconds=0.5, **kw)


def info_of(engine, run_id) -> dict:
    with engine.connect() as c:
        return c.scalar(select(Run.info).where(Run.id == run_id))


@pytest.mark.parametrize(("spec_threads", "setting", "used"), [
    (None, None, 1),  # the default policy: one thread
    (None, 2, 2),  # the worker's setting
    (3, 2, 3),  # the spec wins
])
def test_the_worker_trains_with_the_policys_threads_and_records_them(
    sqlite_engine, tmp_path, make_run, spec_factory, spec_threads, setting, used
):
    kw = {} if setting is None else {"torch_threads": setting}
    s = settings(tmp_path, sqlite_engine.url, **kw)
    run_id = make_run(sqlite_engine.url, spec_factory(threads=spec_threads, steps=5))
    before = torch.get_num_threads()
    assert execute_run(run_id, settings=s, engine=sqlite_engine.engine, worker="w@h",
                       device="cpu") == "succeeded"
    assert torch.get_num_threads() == before  # the worker process's count, given back
    env = info_of(sqlite_engine.engine, run_id)["environment"]
    assert env["torch_threads"] == used and env["dtype"] == "float32" and env["device"] == "cpu"
    assert env["versions"]["torch"] == torch.__version__
    with make_sessionmaker(sqlite_engine.engine)() as session:
        assert run_out(session.get(Run, run_id)).environment == env


def test_the_environment_is_there_while_the_run_trains(
    sqlite_engine, tmp_path, make_run, spec_factory, waiter
):
    s = settings(tmp_path, sqlite_engine.url)
    run_id = make_run(sqlite_engine.url, spec_factory(steps=100_000, dtype="float64"))
    stop = threading.Event()
    t = threading.Thread(target=execute_run, args=(run_id,), daemon=True,
                         kwargs={"settings": s, "engine": sqlite_engine.engine,
                                 "worker": "w@h", "device": "cpu", "shutdown": stop})
    t.start()
    try:
        waiter(lambda: (info_of(sqlite_engine.engine, run_id) or {}).get("environment"),
               30, what="the environment to be recorded")
        env = info_of(sqlite_engine.engine, run_id)["environment"]
        assert env["dtype"] == "float64" and env["torch_threads"] == 1
    finally:
        stop.set()
        t.join(30)


def test_recording_the_environment_is_fenced_and_keeps_the_rest_of_info(
    sqlite_engine, make_run, spec_factory
):
    run_id = make_run(sqlite_engine.url, spec_factory(), status="running", attempts=1,
                      info={"x_axis": {"batch_size": 8}})
    factory = make_sessionmaker(sqlite_engine.engine)
    claim = Claim(run_id, 1, {}, took_over=False)
    assert record_info(factory, claim, {"environment": {"torch_threads": 1}})
    assert info_of(sqlite_engine.engine, run_id) == {"x_axis": {"batch_size": 8},
                                                     "environment": {"torch_threads": 1}}
    with sqlite_engine.engine.begin() as c:  # another worker took the run over
        c.execute(update(Run).where(Run.id == run_id).values(attempts=2))
    assert not record_info(factory, claim, {"environment": {"torch_threads": 9}})
    assert info_of(sqlite_engine.engine, run_id)["environment"] == {"torch_threads": 1}
