"""Worker test fixtures: a tiny run spec, run rows, what a run stored, the in-process reference
(MemorySink) a stored run must equal, and real worker subprocesses that are always killed."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.db.models import (
    DistributionRecord,
    Point,
    ProbeRecord,
    Run,
    Series,
    decode_value,
)
from server.db.session import make_engine, make_sessionmaker, transaction
from server.queue import queue_for
from server.spec import RunSpec, build_spec

ROOT = Path(__file__).resolve().parents[2]

# A deep linear net on its Gaussian task: no files, ~10 ms a step on 2 cores, every record
# kind (scalars, test loss, eta records, histograms), and no probe_time keys beyond landscape
# and activations.
TINY = {
    "model": "dln", "depth": 4, "width": 8, "dataset": "gaussian_linear", "n_samples": 200,
    "loss": "sum_squares", "batch_size": None, "lr": 1e-4, "steps": 60, "eval_every": 20,
    "probes": {"landscape": {"every": 10}, "activations": {"every": 10}},
}


def tiny_spec(**changes) -> RunSpec:
    return build_spec({**TINY, **changes})


@pytest.fixture
def spec_factory():
    return tiny_spec


def create_run(url: str, spec: RunSpec, **values) -> int:
    engine = make_engine(url)
    try:
        with transaction(make_sessionmaker(engine)) as s:
            values = {"status": "queued", **values}
            run = Run(name=spec.name_hint(), spec=spec.model_dump(mode="json"),
                      queue=queue_for(spec.device), total=spec.steps, **values)
            s.add(run)
            s.flush()
            return run.id
    finally:
        engine.dispose()


@pytest.fixture
def make_run():
    return create_run


class Stored:
    """What the database holds for one run: per-key point counts, values, eta and histograms."""

    def __init__(self, url: str, run_id: int) -> None:
        engine = make_engine(url)
        try:
            with make_sessionmaker(engine)() as s:
                self.run = s.get(Run, run_id)
                rows = s.execute(
                    select(Series.key, Point.step, Point.value, Point.flag)
                    .join(Point, Point.series_id == Series.id)
                    .where(Series.run_id == run_id)
                ).all()
                self.etas = s.scalar(select(func.count()).select_from(ProbeRecord)
                                     .where(ProbeRecord.run_id == run_id))
                self.dists = s.scalar(select(func.count()).select_from(DistributionRecord)
                                      .where(DistributionRecord.run_id == run_id))
        finally:
            engine.dispose()
        self.counts = Counter(key for key, *_ in rows)
        self.points = {(key, step): (value, flag) for key, step, value, flag in rows}
        self.n_points = len(rows)

    def series(self, key: str) -> dict[int, float]:
        """Step -> value, non-finite ones decoded from their flag (nan, inf, -inf)."""
        return {step: decode_value(v, f) for (k, step), (v, f) in self.points.items() if k == key}


@pytest.fixture
def stored():
    return Stored


_REFERENCE: dict[str, object] = {}


def reference(spec: RunSpec):
    """The MemorySink of the same spec trained in this process (cached per spec)."""
    from worker.engine.sink import MemorySink
    from worker.engine.trainer import Trainer

    key = spec.model_dump_json()
    if key not in _REFERENCE:
        sink = MemorySink()
        Trainer(spec, ROOT, "cpu").run(sink)
        _REFERENCE[key] = sink
    return _REFERENCE[key]


@pytest.fixture
def memory_reference():
    return reference


def assert_same_metrics(got: Stored, mem, *, rel: float = 0.0) -> None:
    """Same keys, same steps, same values (probe timings excepted), nothing more or less;
    time/wall_s (the clock: a resumed run adds a point where it resumed) only present and
    monotone."""
    clock = "time/wall_s"
    assert {k: n for k, n in got.counts.items() if k != clock} == {
        k: len(v) for k, v in mem.series.items() if k != clock}
    if clock in mem.series:
        wall = got.series(clock)
        assert wall and [wall[s] for s in sorted(wall)] == sorted(wall.values())
    assert got.etas == sum(len(r) for steps in mem.etas.values() for r in steps.values())
    assert got.dists == sum(len(v) for v in mem.dists.values())
    for key, values in mem.series.items():
        if key.startswith(("probe_time/", "time/")):
            continue
        db = got.series(key)
        assert set(db) == set(values), key
        for step, v in values.items():
            if math.isnan(v):
                assert math.isnan(db[step]), (key, step)
            else:
                assert db[step] == pytest.approx(v, rel=rel, abs=0), (key, step)


@pytest.fixture
def same_metrics():
    return assert_same_metrics


def make_service_env(**landscope) -> dict[str, str]:
    """This environment without any LANDSCOPE_* of the caller's, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCOPE_")}
    env.update({f"LANDSCOPE_{k.upper()}": str(v) for k, v in landscope.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def service_env():
    return make_service_env


class WorkerProcs:
    """Starts `landscope worker` subprocesses; kills every one still alive at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, env: dict[str, str], name: str = "w") -> subprocess.Popen:
        log = self.tmp / f"worker-{name}-{len(self.procs)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "landscope.cli", "worker", "--device", "cpu",
             "--name", f"test-{name}-{len(self.procs)}@%h"],
            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((proc, log))
        return proc

    def log(self, proc: subprocess.Popen) -> str:
        return next(p for q, p in self.procs if q is proc).read_text()

    def stop(self, proc: subprocess.Popen, timeout: float = 15) -> float:
        """SIGTERM (warm shutdown); the seconds it took to exit."""
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
        return time.monotonic() - started

    def kill_all(self) -> None:
        for proc, log in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            print(f"--- {log.name} ---\n{log.read_text()[-3000:]}")


@pytest.fixture
def workers(tmp_path):
    procs = WorkerProcs(tmp_path)
    yield procs
    procs.kill_all()


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def waiter():
    return wait_for
