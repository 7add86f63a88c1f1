"""An analysis is computed in its run's numerics (job_numerics.py): the run's thread count
(else the launcher's setting, else 1) and its deterministic switch, in force while it
prepares and evaluates, the caller's put back afterwards; and every step records the
environment it was computed in, once per distinct environment."""

from __future__ import annotations

import pytest
import torch

from server.analysis_spec import ENV_PREFIX, AnalysisSpec, split_environments
from server.spec import RunSpec
from worker.engine.geometry.job import AnalysisJob
from worker.engine.geometry.job_numerics import environment_key
from worker.engine.geometry.sink import MemoryAnalysisSink
from worker.engine.sink import MemorySink
from worker.engine.snapshots import DirectorySnapshotStore
from worker.engine.trainer import Trainer

RUN = {"model": "mlp", "depth": 3, "width": 8, "dataset": "digits", "lr": 0.3,
       "norm": "batch", "batch_size": 32, "steps": 3, "device": "cpu", "eval_every": 0}
SLICE = {"kind": "slice", "x": {"points": 5}, "eval_samples": 64, "batch_size": 32,
         "chunk_points": 2, "directions": {"kind": "random", "seed": 3}}


class Watching(MemoryAnalysisSink):
    """Notes the switches in force whenever the job writes (always inside its work)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[bool, int]] = set()

    def _note(self) -> None:
        self.seen.add((torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()))

    def points(self, step, rows):
        self._note()
        super().points(step, rows)

    def values(self, step, values):
        self._note()
        super().values(step, values)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    store = DirectorySnapshotStore(out / "snaps")
    Trainer(RunSpec.model_validate(RUN), out).run(MemorySink(), snapshots=store)
    return out, store


def job_for(trained, threads=None, **run) -> AnalysisJob:
    out, store = trained
    spec = RunSpec.model_validate({**RUN, **run})
    return AnalysisJob(spec, AnalysisSpec.model_validate(SLICE), out, store, "cpu",
                       threads=threads)


@pytest.fixture
def switches():
    """The process's switches before the test, checked unchanged after it."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    yield before
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before


def test_the_runs_threads_and_determinism_hold_while_it_works_and_are_put_back(
        trained, switches):
    job = job_for(trained, deterministic=True, threads=2)
    sink = Watching()
    assert job.run_all(sink)
    assert sink.seen == {(True, 2)}
    (step,) = job.steps()
    values, envs = split_environments(sink.named[step])
    # prepare and chunks ran in one environment here: it is recorded once, under its digest
    assert len(envs) == 1 and not any(k.startswith(ENV_PREFIX) for k in values)
    (env,) = envs
    assert (env["deterministic"], env["torch_threads"], env["dtype"], env["device"]) == (
        True, 2, "float32", "cpu")
    assert environment_key(env) in sink.named[step]
    assert values["meta"]["threads"] == 2


@pytest.mark.parametrize("setting,want", [(None, 1), (2, 2)])
def test_without_the_runs_own_count_the_launchers_setting_else_one(trained, switches,
                                                                     setting, want):
    sink = Watching()
    assert job_for(trained, threads=setting).run_all(sink)
    assert sink.seen == {(switches[0], want)}
    (env,) = split_environments(sink.named[job_for(trained).steps()[0]])[1]
    assert env["torch_threads"] == want and env["deterministic"] is False


def test_determinism_does_not_change_a_cpu_analysis(trained, switches):
    """CPU kernels are deterministic either way: the switch changes the record only."""
    plain, strict = MemoryAnalysisSink(), MemoryAnalysisSink()
    job_for(trained).run_all(plain)
    job_for(trained, deterministic=True).run_all(strict)
    (step,) = plain.grid
    assert [r.loss for r in plain.grid[step].values()] == [
        r.loss for r in strict.grid[step].values()]
    assert split_environments(plain.named[step])[1] != split_environments(strict.named[step])[1]


def test_chunks_on_another_worker_record_their_own_environment(trained, switches, tmp_path):
    """A step prepared with one thread count and evaluated with another (a second worker
    with another LANDSCOPE_TORCH_THREADS) lists both environments."""
    first = job_for(trained, threads=1)
    (step,) = first.steps()
    sink = MemoryAnalysisSink()
    first.prepare(step, sink)
    first.save_directions(step, tmp_path / "dirs.pt")
    other = job_for(trained, threads=2)
    other.load_directions(torch.load(tmp_path / "dirs.pt", weights_only=True))
    other.run_chunk(step, range(first.grid_points()), sink)
    envs = split_environments(sink.named[step])[1]
    assert sorted(e["torch_threads"] for e in envs) == [1, 2]


def test_a_user_model_keeps_the_callers_threads(switches):
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))

    class One:
        def steps(self):
            return [0]

        def load(self, _step):
            return {"model": net.state_dict()}

    spec = AnalysisSpec.model_validate({**SLICE, "steps": [0], "eval_samples": 16,
                                        "batch_size": 16})
    for deterministic in (False, True):
        job = AnalysisJob.from_model(net, "cross_entropy", (x, y), spec, One(),
                                     classify=True, deterministic=deterministic)
        sink = Watching()
        assert job.run_all(sink)
        assert sink.seen == {(deterministic or switches[0], switches[1])}
        (env,) = split_environments(sink.named[0])[1]
        assert env["torch_threads"] == switches[1] and env["deterministic"] == deterministic
