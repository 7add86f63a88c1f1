"""Analysis jobs on a tiny trained net: the wiring of snapshots, data, directions and grid.

Values are checked against plain forwards of a freshly built network (brute force), chunking
against the one-chunk surface bit for bit, and the run's snapshot files against their bytes
before the analysis.
"""

from __future__ import annotations

import hashlib
import math
import struct

import pytest
import torch
import torch.nn.functional as F

from server.analysis_spec import AnalysisSpec
from worker.engine.geometry.directions import orthogonalize, random_direction
from worker.engine.geometry.flat import dot, flatten, norm
from worker.engine.geometry.job import GROUP, AnalysisJob
from worker.engine.geometry.sink import MemoryAnalysisSink
from worker.engine.models import build_model

from .conftest import STEPS


def analysis(**over) -> AnalysisSpec:
    base = {"kind": "surface", "x": {"points": 5}, "y": {"lo": -0.5, "hi": 0.5, "points": 4},
            "eval_samples": 64, "batch_size": 32,
            "directions": {"seed": 7, "kind": "pca" if over.get("kind") == "trajectory"
                           else "random"}}
    spec = {**base, **over}
    spec["directions"] = {**base["directions"], **spec["directions"]}
    return AnalysisSpec.model_validate(spec)


def job_for(runs, name="bn", other=None, **over) -> AnalysisJob:
    spec, store, data = runs[name]
    other_store = runs[other][1] if other else None
    return AnalysisJob(spec, analysis(**over), data, store, "cpu", other_snapshots=other_store)


def bits(xs) -> list[bytes]:
    return [struct.pack("<d", x) for x in xs]


def direct(job: AnalysisJob, state: dict, params: dict | None = None, *, x=None, y=None,
           mode: str = "batch") -> tuple[float, float]:
    """Brute force: a fresh network with `state` (and `params` written over its parameters),
    plain forwards over the evaluation batches; batch mode = train mode, running = eval."""
    net = build_model(job.run_spec, (1, 8, 8), 10, torch.Generator())
    net.load_state_dict(state)
    if params is not None:
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(params[n])
    net.train(mode == "batch")
    x = job.x if x is None else x
    y = job.y if y is None else y
    total, hits = 0.0, 0
    with torch.no_grad():
        for xb, yb in zip(x.split(job.batch_size), y.split(job.batch_size), strict=True):
            out = net(xb)
            total += float(F.cross_entropy(out, yb, reduction="sum"))
            hits += int((out.argmax(1) == yb).sum())
    return total / len(x), hits / len(x)


def params(state: dict, job: AnalysisJob) -> dict:
    return {n: state[n] for n in job.names}


# -- values against brute force ------------------------------------------------------------

@pytest.mark.parametrize("bn_mode", ["batch", "running"])
def test_surface_values_are_theta_plus_a_d1_plus_b_d2(runs, bn_mode):
    job = job_for(runs, bn_mode=bn_mode)
    sink = MemoryAnalysisSink()
    assert job.run_all(sink)
    assert job.steps() == [STEPS]
    state = job.store.load(STEPS)["model"]
    theta = params(state, job)
    d1 = random_direction(theta, 7, "d1")
    d2 = orthogonalize(random_direction(theta, 7, "d2"), d1)
    xs, ys = job.spec.x_axis().values(), job.spec.y_axis().values()
    assert sorted(sink.grid[STEPS]) == list(range(20))
    for i in (0, 3, 7, 12, 19):
        iy, ix = divmod(i, 5)
        a, b = xs[ix], ys[iy]
        point = {n: theta[n] + a * d1[n] + b * d2[n] for n in theta}
        loss, acc = direct(job, state, point, mode=bn_mode)
        got = sink.grid[STEPS][i]
        assert got.loss == pytest.approx(loss, rel=1e-5), i
        assert got.acc == pytest.approx(acc, abs=1e-9), i
        assert got.test_loss is None
    values = sink.named[STEPS]
    assert values["directions"]["labels"] == ["d1", "d2"]
    assert values["directions"]["norms"][0] == pytest.approx(norm(d1), rel=1e-6)
    assert abs(dot(d1, d2)) < 1e-6 * norm(d1) * norm(d2)


def test_every_step_records_how_it_was_measured(runs):
    job = job_for(runs, kind="slice", steps=[2, 4], bn_mode="recalibrated",
                  recalibration_samples=48, x={"points": 3})
    sink = MemoryAnalysisSink()
    job.run_all(sink)
    for step in (2, 4):
        meta = sink.named[step]["meta"]
        assert meta["bn_mode"] == "recalibrated"
        assert meta["eval_samples"] == 64 and meta["batch_size"] == 32
        assert meta["recalibration_samples"] == 48
        assert meta["directions"]["kind"] == "random" and meta["directions"]["seed"] == 7
        assert meta["torch"] == torch.__version__ and meta["dtype"] == "float32"
        assert meta["device"] == "cpu" and meta["threads"] == torch.get_num_threads()
        assert len(sink.grid[step]) == 3


def test_the_gradient_direction_is_the_gradient_at_theta_scaled_to_theta(runs):
    job = job_for(runs, "none", kind="slice", directions={"kind": "gradient"},
                  x={"points": 3})
    prep = job.prepare(STEPS, MemoryAnalysisSink())
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in prep.theta.items()}
    net = build_model(job.run_spec, (1, 8, 8), 10, torch.Generator())
    out = torch.func.functional_call(net, theta, (job.x,))
    g = torch.autograd.grad(F.cross_entropy(out, job.y), list(theta.values()))
    g = dict(zip(theta, g, strict=True))
    d = prep.directions.directions[0]
    assert dot(d, g) / (norm(d) * norm(g)) == pytest.approx(1.0, abs=1e-5)
    assert norm(d) == pytest.approx(norm(prep.theta), rel=1e-5)


def hessian_brute_force(job: AnalysisJob, theta: dict) -> torch.Tensor:
    net = build_model(job.run_spec, (1, 8, 8), 10, torch.Generator()).double()
    names, shapes = list(theta), [t.shape for t in theta.values()]
    x = job.x.double()

    def loss(flat):
        parts = dict(zip(names, [p.view(s) for p, s in zip(
            flat.split([math.prod(s) for s in shapes]), shapes, strict=True)], strict=True))
        return F.cross_entropy(torch.func.functional_call(net, parts, (x,)), job.y)

    return torch.autograd.functional.hessian(loss, flatten(theta).double(), vectorize=True)


def test_spectrum_and_hessian_directions_match_the_brute_force_hessian(runs):
    job = job_for(runs, "none", kind="spectrum",
                  spectrum={"top_k": 3, "lanczos_steps": 80, "trace_probes": 4,
                            "slq_steps": 10, "slq_vectors": 1, "density_points": 32})
    sink = MemoryAnalysisSink()
    job.run_all(sink)
    theta = params(job.store.load(STEPS)["model"], job)
    evals, evecs = torch.linalg.eigh(hessian_brute_force(job, theta))
    spec = sink.named[STEPS]["spectrum"]
    assert spec["top_eigenvalues"] == pytest.approx(evals.flip(0)[:3].tolist(), rel=1e-3)
    assert STEPS not in sink.grid  # a spectrum has no grid

    hjob = job_for(runs, "none", kind="surface", directions={"kind": "hessian"},
                   spectrum={"lanczos_steps": 80})
    prep = hjob.prepare(STEPS, MemoryAnalysisSink())
    for d, j in zip(prep.directions.directions, (-1, -2), strict=True):
        v = flatten(d).double()
        assert abs(float(v @ evecs[:, j])) / float(v.norm()) == pytest.approx(1.0, abs=1e-3)
        assert float(v.norm()) == pytest.approx(norm(theta), rel=1e-5)


# -- chunks and directions across workers --------------------------------------------------

def test_a_surface_cut_into_chunks_equals_the_one_chunk_surface_bit_for_bit(runs):
    big = MemoryAnalysisSink()
    job_for(runs, chunk_points=20).run_all(big)
    for per in (3, GROUP, 7):
        cut = MemoryAnalysisSink()
        job_for(runs, chunk_points=per).run_all(cut)
        assert bits(cut.losses(STEPS)) == bits(big.losses(STEPS)), per
        assert [cut.grid[STEPS][i].acc for i in range(20)] == \
               [big.grid[STEPS][i].acc for i in range(20)]
    # chunks in any order, on a job that prepared once
    job, sink = job_for(runs), MemoryAnalysisSink()
    job.prepare(STEPS, sink)
    for rng in reversed([range(0, 5), range(5, 11), range(11, 20)]):
        assert job.run_chunk(STEPS, rng, sink) == len(rng)
    assert bits(sink.losses(STEPS)) == bits(big.losses(STEPS))


@pytest.mark.parametrize("over", [
    {}, {"directions": {"kind": "pca"}}, {"kind": "slice", "directions": {"kind": "gradient"}},
    {"kind": "trajectory"},
])
def test_directions_round_trip_and_a_chunk_from_loaded_ones_equals_a_fresh_one(
        runs, tmp_path, over):
    first = job_for(runs, **over)
    fresh = MemoryAnalysisSink()
    first.prepare(STEPS, fresh)
    path = tmp_path / "dirs.pt"
    first.save_directions(STEPS, path)
    second = job_for(runs, **over)
    with pytest.raises(RuntimeError, match="not prepared"):
        second.run_chunk(STEPS, range(0, 4), MemoryAnalysisSink())
    loaded_state = torch.load(path, weights_only=True)
    prep = second.load_directions(loaded_state)
    for a, b in zip(prep.directions.directions, first._prepared[STEPS].directions.directions,
                    strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    n = first.grid_points()
    loaded = MemoryAnalysisSink()
    first.run_chunk(STEPS, range(2, n), fresh)
    second.run_chunk(STEPS, range(2, n), loaded)
    assert bits(loaded.losses(STEPS)) == bits(fresh.losses(STEPS))
    with pytest.raises(ValueError, match="another analysis spec"):
        job_for(runs, bn_mode="running", **over).load_directions(loaded_state)


def test_an_analysis_leaves_the_snapshot_files_bit_identical(runs):
    store = runs["bn"][1]

    def fingerprint():
        return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
                for p in sorted(store.dir.iterdir())}

    before = fingerprint()
    for over in ({}, {"kind": "trajectory", "bn_mode": "running"},
                 {"kind": "slice", "directions": {"kind": "interpolation"},
                  "bn_mode": "recalibrated", "x": {"points": 3}}):
        job_for(runs, **over).run_all(MemoryAnalysisSink())
    assert fingerprint() == before


# -- interpolation and trajectory ----------------------------------------------------------

@pytest.mark.parametrize("source", ["init", "run"])
def test_interpolation_endpoints_are_the_snapshots_and_the_barrier_is_on_the_segment(
        runs, source):
    directions = {"kind": "interpolation", "source": source,
                  **({"other_run": 2} if source == "run" else {})}
    job = job_for(runs, other="bn2" if source == "run" else None, kind="slice",
                  directions=directions, x={"lo": -0.5, "hi": 1.5, "points": 9})
    sink = MemoryAnalysisSink()
    job.run_all(sink)
    store_b = runs["bn2"][1] if source == "run" else job.store
    state_a = job.store.load(0 if source == "init" else STEPS)["model"]
    state_b = store_b.load(STEPS)["model"]
    ends = sink.named[STEPS]["endpoints"]
    for end, state in (("a", state_a), ("b", state_b)):
        loss, acc = direct(job, state)
        assert ends[end]["loss"] == pytest.approx(loss, rel=1e-6), end
        assert ends[end]["acc"] == pytest.approx(acc, abs=1e-9), end
    losses = sink.losses(STEPS)  # alphas -0.5, -0.25, 0, 0.25, ..., 1.5
    assert losses[2] == pytest.approx(ends["a"]["loss"], rel=1e-5)
    assert losses[6] == pytest.approx(ends["b"]["loss"], rel=1e-5)
    expected = max(losses[2:7]) - max(ends["a"]["loss"], ends["b"]["loss"])
    assert sink.named[STEPS]["barrier"] == pytest.approx(expected, rel=1e-12)


def test_interpolation_needs_the_snapshots_it_names(runs):
    job = job_for(runs, "bn", other="bn2", kind="slice", steps=[3],
                  directions={"kind": "interpolation", "source": "run", "other_run": 2})
    with pytest.raises(ValueError, match="no snapshot of step 3 in this run; saved steps"):
        job.steps()
    with pytest.raises(ValueError, match="needs the other run's snapshots"):
        job_for(runs, kind="slice",
                directions={"kind": "interpolation", "source": "run", "other_run": 2})


@pytest.mark.parametrize("bn_mode", ["batch", "running"])
def test_the_trajectory_projects_every_snapshot_on_its_pca_plane(runs, bn_mode):
    job = job_for(runs, kind="trajectory", bn_mode=bn_mode)
    sink = MemoryAnalysisSink()
    job.run_all(sink)
    traj = sink.named[STEPS]["trajectory"]
    assert traj["steps"] == [0, 2, 4, 6]
    assert traj["coords"][-1] == [0.0, 0.0]
    assert max(abs(c) for xy in traj["coords"] for c in xy) == pytest.approx(0.8)
    assert 0 < sum(traj["explained_variance"]) <= 1 + 1e-12
    final = job.store.load(STEPS)["model"]
    theta = params(final, job)
    d1, d2 = job._prepared[STEPS].directions.directions
    for step, (c1, c2), loss, on_plane in zip(traj["steps"], traj["coords"], traj["loss"],
                                              traj["surface_loss"], strict=True):
        state = job.store.load(step)["model"]
        diff = {n: state[n] - theta[n] for n in theta}
        assert dot(diff, d1) / dot(d1, d1) == pytest.approx(c1, abs=1e-6)
        assert dot(diff, d2) / dot(d2, d2) == pytest.approx(c2, abs=1e-6)
        assert loss == pytest.approx(direct(job, state, mode=bn_mode)[0], rel=1e-5), step
        point = {n: theta[n] + c1 * d1[n] + c2 * d2[n] for n in theta}
        assert on_plane == pytest.approx(direct(job, final, point, mode=bn_mode)[0], rel=1e-5)
    assert len(sink.grid[STEPS]) == 20


# -- the test set, stopping, errors --------------------------------------------------------

def test_the_test_set_on_request(runs):
    job = job_for(runs, kind="slice", test_set=True, x={"points": 3})
    data_test = job.test
    sink = MemoryAnalysisSink()
    job.run_all(sink)
    state = job.store.load(STEPS)["model"]
    mid = sink.grid[STEPS][1]  # alpha 0: theta itself
    loss, acc = direct(job, state, x=data_test[0], y=data_test[1])
    assert mid.test_loss == pytest.approx(loss, rel=1e-5)
    assert mid.test_acc == pytest.approx(acc, abs=1e-9)


def test_should_stop_ends_between_groups(runs):
    job, sink = job_for(runs, chunk_points=20), MemoryAnalysisSink()
    calls = []

    def stop_after_one_group():
        calls.append(1)
        return len(calls) > 2  # run_all asks once before the step, then once per group

    assert job.run_all(sink, should_stop=stop_after_one_group) is False
    assert sorted(sink.grid[STEPS]) == list(range(GROUP))


def test_missing_steps_and_bad_indices_are_named(runs):
    job = job_for(runs, steps=[2, 5, 7])
    with pytest.raises(ValueError, match="no snapshot of step 5, 7 in this run.*0, 2, 4, 6"):
        job.steps()
    job = job_for(runs)
    job.prepare(STEPS, MemoryAnalysisSink())
    with pytest.raises(ValueError, match=r"grid indices must lie in \[0, 20\)"):
        job.run_chunk(STEPS, range(15, 21), MemoryAnalysisSink())
