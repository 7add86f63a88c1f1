"""SqlSink builds its rows on the writer thread (issue 13: row building was 13 % of a write,
paid by the training thread), and what it stores is what it was handed at the call."""

from __future__ import annotations

import threading

import pytest

from server.db.metrics import read_series, run_keys
from server.db.session import make_engine
from worker.engine.sink import Distribution, EtaRecord
from worker.sql_sink import SqlSink, _Batch


@pytest.fixture
def engine(migrated_db_url):
    e = make_engine(migrated_db_url)
    yield e
    e.dispose()


@pytest.fixture
def run_id(migrated_db_url, make_run, spec_factory):
    return make_run(migrated_db_url, spec_factory())


def test_rows_are_built_by_the_writer_thread(engine, run_id, monkeypatch):
    built_on: list[str] = []
    done = threading.Event()
    for name in ("columns", "eta_rows", "dist_rows"):
        real = getattr(_Batch, name)

        def spy(self, *a, _real=real, _name=name):
            built_on.append(threading.current_thread().name)
            if _name == "dist_rows":
                done.set()
            return _real(self, *a)

        monkeypatch.setattr(_Batch, name, spy)
    sink = SqlSink(engine, run_id, flush_seconds=3600, flush_points=4)
    try:
        sink.eta_records(0, "landscape", [EtaRecord(1.0, 0.1, 2.0, 0.5)])
        sink.distributions(0, [Distribution(1, "layer", None, -1.0, 1.0, [1, 2], 0, 0, 0,
                                            0.0, 1.0, {"q50": 0.0})])
        assert built_on == []  # nothing built by the calls themselves
        sink.scalars(0, {"a": 1.0, "b": 2.0})  # the fourth row: the writer wakes
        assert done.wait(60)
        assert built_on == [f"sql-sink-{run_id}"] * 3
    finally:
        sink.close()
    with engine.connect() as c:
        keys = run_keys(c, run_id)
        assert read_series(c, keys["a"], "a").values == [1.0]


def test_a_mapping_reused_by_the_caller_does_not_change_what_is_stored(engine, run_id):
    sink = SqlSink(engine, run_id, flush_seconds=3600, flush_points=10_000)
    values = {"loss": 0.0}
    try:
        for step in range(50):
            values["loss"] = float(step)  # the caller refills one dict every step
            sink.scalars(step, values)
    finally:
        sink.close()
    with engine.connect() as c:
        got = read_series(c, run_keys(c, run_id)["loss"], "loss")
        assert got.steps == list(range(50)) and got.values == [float(s) for s in range(50)]


def test_changing_key_sets_and_value_types_are_stored_exactly(engine, run_id):
    import math

    import numpy as np

    logged = [
        (0, {"a": 1.0, "b": 2}),
        (1, {"a": 1.5, "b": np.float32(0.25)}),
        (2, {"b": 3.0, "a": math.nan}),  # same keys, other order
        (3, {}),
        (4, {"c": math.inf}),
        (5, {"a": -math.inf, "b": 5.0, "c": np.int64(7)}),
        (6, {"a": 6.0, "b": 6.0, "c": 6.0}),
    ]
    sink = SqlSink(engine, run_id, flush_seconds=3600, flush_points=10_000)
    try:
        for step, values in logged:
            sink.scalars(step, values)
    finally:
        sink.close()
    want: dict[str, dict[int, float]] = {}
    for step, values in logged:
        for k, v in values.items():
            want.setdefault(k, {})[step] = float(v)
    with engine.connect() as c:
        keys = run_keys(c, run_id)
        assert set(keys) == set(want)
        for key, points in want.items():
            got = read_series(c, keys[key], key)
            assert got.steps == sorted(points)
            for s, v in zip(got.steps, got.values, strict=True):
                assert (math.isnan(v) and math.isnan(points[s])) or v == points[s], (key, s)
