"""Analysis tasks called in this process, on SQLite: a run's snapshots indexed as files and
rows as it trains (and by the next store when a row is missing), the SQL sink's non-finite
values and deleted analyses, and prepare and chunk tasks storing points (and named values) that
equal an in-process AnalysisJob.run_all bit for bit, in any order, idempotent when delivered
again.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from server.analysis_spec import chunks
from server.db.models import Analysis, Snapshot
from server.services import analyses
from server.spec import build_spec
from tests.worker.analysis_env import (
    RUN,
    SURFACE,
    Env,
    as_points,
    env_fixture,  # noqa: F401 - the env fixture
    same_points,
)
from worker.analysis_runner import JobCache, prepare, run_chunk
from worker.analysis_sink import AnalysisGone, SqlAnalysisSink, json_safe
from worker.engine.geometry.sink import GridValue
from worker.engine.snapshots import DirectorySnapshotStore
from worker.snapshot_index import IndexedSnapshotStore, snapshot_dir


def drive(env: Env, analysis_id: int, order=lambda sent: sent) -> list[tuple]:
    """prepare, then every chunk it sent (in `order`), as the workers would."""
    jobs = JobCache()
    sent: list[tuple] = []
    out = prepare(analysis_id, settings=env.settings, engine=env.engine, worker="w",
                  device="cpu", send_chunk=lambda *a: sent.append(a[:3]), jobs=jobs)
    assert out in ("prepared", "succeeded", "skipped: succeeded"), out
    for aid, step, i in order(sent):
        run_chunk(aid, step, i, settings=env.settings, engine=env.engine, device="cpu",
                  jobs=JobCache() if i % 2 else jobs)  # fresh jobs: as another worker
    return sent


def test_a_run_s_snapshots_are_files_and_rows(env, make_run):
    run_id = env.train(make_run)
    files = DirectorySnapshotStore(snapshot_dir(env.settings, run_id))
    assert files.steps() == [0, 10, 20, 30]
    with env.factory() as s:
        rows = s.execute(select(Snapshot).where(Snapshot.run_id == run_id)
                         .order_by(Snapshot.step)).scalars().all()
    assert [(r.step, Path(r.path), r.bytes) for r in rows] == [
        (k, files.path(k), files.path(k).stat().st_size) for k in (0, 10, 20, 30)]


def test_a_snapshot_file_without_its_row_is_indexed_by_the_next_store(env, make_run):
    run_id = make_run(env.url, build_spec(RUN))
    directory = snapshot_dir(env.settings, run_id)
    state = {"step": 5, "spec": "{}", "model": {"w": torch.ones(3)}}
    DirectorySnapshotStore(directory).save(5, state)  # the worker died before the row
    store = IndexedSnapshotStore(env.engine, run_id, directory)
    assert store.indexed() == [5]
    store.save(7, {**state, "step": 7})
    store.save(7, {**state, "step": 7})  # a resumed run saving again duplicates nothing
    assert store.indexed() == store.steps() == [5, 7]
    assert torch.equal(store.load(7)["model"]["w"], torch.ones(3))


def test_the_sink_stores_non_finite_values_and_knows_a_deleted_analysis(env, make_run):
    run_id = make_run(env.url, build_spec(RUN))
    with env.factory.begin() as s:
        a = Analysis(run_id=run_id, group_id=1, kind="slice", bn_mode="batch",
                     spec={"kind": "slice", "test_set": False},
                     queue="landscope.cpu", total_points=3, status="running")
        s.add(a)
    sink = SqlAnalysisSink(env.engine, a.id)
    sink.values(0, {"spectrum": {"trace": math.inf, "top": (1.5, math.nan)}})
    sink.points(0, [GridValue(0, math.nan), GridValue(2, -math.inf, 0.5)])
    sink.points(0, [GridValue(2, 1.0, 1.0)])  # stored already: the first value stays
    assert env.values(a.id) == {(0, "spectrum"): {"trace": "Infinity", "top": [1.5, "NaN"]}}
    got = {k: v[:2] for k, v in env.points(a.id).items()}
    assert math.isnan(got.pop((0, 0))[0]) and got == {(0, 2): (-math.inf, 0.5)}
    assert env.analysis(a.id).done_points == 2
    with env.factory.begin() as s:
        analyses.cancel_analysis(s, a.id)
        analyses.delete_analysis(s, env.settings, a.id)
    with pytest.raises(AnalysisGone):
        sink.points(0, [GridValue(1, 0.0)])


def test_a_surface_in_chunks_equals_the_in_process_surface(env, make_run):
    run_id = env.train(make_run)
    spec = {**SURFACE, "steps": [10, 30], "test_set": True}
    a = env.create(run_id, **spec)
    sent = drive(env, a.id, order=lambda sent: list(reversed(sent)) + sent[:3])
    assert sent == [(a.id, step, i) for step in (10, 30) for i in range(len(chunks(20, 8)))]
    done = env.analysis(a.id)
    assert (done.status, done.done_points, done.total_points) == ("succeeded", 40, 40)
    assert done.prepared_steps == [10, 30] and done.finished_at is not None
    ref = env.reference(run_id, spec)
    same_points(env.points(a.id), as_points(ref))
    stored = env.values(a.id)
    assert stored == {(step, k): json_safe(v) for step, vals in ref.named.items()
                      for k, v in vals.items()}
    saved = torch.load(analyses.directions_path(env.settings, a.id, 30), weights_only=True)
    assert saved["step"] == 30 and len(saved["directions"]) == 2
    # Delivered again, every task finds its work done and changes nothing.
    before = env.points(a.id)
    drive(env, a.id)
    run_chunk(a.id, 30, 0, settings=env.settings, engine=env.engine, device="cpu",
              jobs=JobCache())
    assert env.points(a.id) == before and env.analysis(a.id).status == "succeeded"


def test_a_spectrum_and_an_interpolation_barrier(env, make_run):
    run_id = env.train(make_run)
    spectrum = {"kind": "spectrum", "eval_samples": 128, "batch_size": 64,
                "spectrum": {"top_k": 2, "lanczos_steps": 6, "trace_probes": 4,
                             "slq_steps": 6, "slq_vectors": 2, "density_points": 32}}
    a = env.create(run_id, **spectrum)
    drive(env, a.id)
    assert env.analysis(a.id).status == "succeeded"
    ref = env.reference(run_id, spectrum)
    assert env.values(a.id)[(30, "spectrum")] == json_safe(ref.named[30]["spectrum"])

    interp = {"kind": "slice", "directions": {"kind": "interpolation"}, "eval_samples": 128,
              "x": {"lo": -0.5, "hi": 1.5, "points": 9}, "chunk_points": 8}
    b = env.create(run_id, **interp)
    drive(env, b.id)
    ref = env.reference(run_id, interp)
    same_points(env.points(b.id), as_points(ref))
    assert env.values(b.id)[(30, "barrier")] == json_safe(ref.named[30]["barrier"])


def test_each_workers_environment_is_recorded_and_the_api_lists_them(env, make_run):
    """The preparing worker and a chunk worker with another LANDSCOPE_TORCH_THREADS: the step
    lists both environments (each once, however many chunks), and the run's `deterministic`
    switch is in every one; the API's detail gives them apart from the values."""
    from server.services.analysis_views import analysis_detail

    run_id = env.train(make_run, deterministic=True)
    a = env.create(run_id, **SURFACE)
    sent: list[tuple] = []
    prepare(a.id, settings=env.settings, engine=env.engine, worker="w1", device="cpu",
            send_chunk=lambda *x: sent.append(x[:3]), jobs=JobCache())
    other = env.settings.model_copy(update={"torch_threads": 2})
    jobs = JobCache()  # one worker: its job (and its record) reused chunk after chunk
    for aid, step, i in sent:
        run_chunk(aid, step, i, settings=other, engine=env.engine, device="cpu", jobs=jobs)
    assert len(sent) > 1 and env.analysis(a.id).status == "succeeded"
    with env.factory() as s:
        detail = analysis_detail(s, s.get(Analysis, a.id))
    (step,) = detail.steps.values()
    assert sorted(e["torch_threads"] for e in step.environments) == [1, 2]
    assert all(e["deterministic"] is True for e in step.environments)
    assert not any(k.startswith("environment:") for k in step.values)
    assert step.values["meta"]["threads"] == 1  # the preparing worker's
