"""The analysis jobs' shared runs: a tiny MLP trained with snapshots, with and without BN."""

from __future__ import annotations

import pytest

from server.spec import RunSpec
from worker.engine.sink import MemorySink
from worker.engine.snapshots import DirectorySnapshotStore
from worker.engine.trainer import Trainer

STEPS = 6


def run_spec(**over) -> RunSpec:
    return RunSpec.model_validate({
        "model": "mlp", "depth": 3, "width": 8, "dataset": "digits", "lr": 0.3,
        "batch_size": 32, "steps": STEPS, "device": "cpu", "eval_every": 0,
        "snapshots": {"every": 2}, **over})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> (RunSpec, store, data_dir): BN runs of two seeds, and one without norm."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, over in {"bn": {"norm": "batch", "seed": 1}, "bn2": {"norm": "batch", "seed": 2},
                       "none": {"norm": "none", "seed": 1}}.items():
        spec = run_spec(**over)
        store = DirectorySnapshotStore(root / name)
        Trainer(spec, root).run(MemorySink(), snapshots=store)
        out[name] = (spec, store, root)
    return out
