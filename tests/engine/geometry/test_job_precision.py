"""An analysis of a float64 run is computed in float64, as the run was trained: network,
evaluation data and values (a float32 evaluation would round the run's weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from server.analysis_spec import AnalysisSpec
from server.spec import RunSpec
from worker.engine.geometry.job import AnalysisJob
from worker.engine.geometry.sink import MemoryAnalysisSink
from worker.engine.models import build_model
from worker.engine.sink import MemorySink
from worker.engine.snapshots import DirectorySnapshotStore
from worker.engine.trainer import Trainer


def test_a_float64_runs_analysis_is_float64(tmp_path):
    spec = RunSpec.model_validate({
        "model": "mlp", "depth": 3, "width": 8, "dataset": "digits", "lr": 0.3, "norm": "batch",
        "batch_size": 32, "steps": 4, "device": "cpu", "eval_every": 0, "dtype": "float64"})
    store = DirectorySnapshotStore(tmp_path / "snaps")
    Trainer(spec, tmp_path).run(MemorySink(), snapshots=store)
    analysis = AnalysisSpec.model_validate({
        "kind": "slice", "x": {"points": 3}, "eval_samples": 64, "batch_size": 32,
        "directions": {"kind": "random", "seed": 7}})
    job = AnalysisJob(spec, analysis, tmp_path, store, "cpu")
    assert all(p.dtype == torch.float64 for p in job.net.parameters())
    assert job.x.dtype == torch.float64
    sink = MemoryAnalysisSink()
    assert job.run_all(sink)
    (step,) = job.steps()
    assert sink.named[step]["meta"]["dtype"] == "float64"
    # The centre of the slice (a = 0) is the snapshot's own loss, by a float64 brute force.
    xs = analysis.x_axis().values()
    centre = sink.grid[step][list(xs).index(0.0)]
    net = build_model(spec, (1, 8, 8), 10, torch.Generator()).double()
    net.load_state_dict(store.load(step)["model"])
    net.train()
    with torch.no_grad():
        total = sum(float(F.cross_entropy(net(xb), yb, reduction="sum"))
                    for xb, yb in zip(job.x.split(32), job.y.split(32), strict=True))
    assert abs(centre.loss - total / len(job.x)) <= 1e-12 * abs(centre.loss)
