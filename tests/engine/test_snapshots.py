"""Snapshots: w_s at the scheduled steps, nothing changed by saving them, none saved twice."""

from __future__ import annotations

import pickle

import pytest
import torch

from server.spec import RunSpec, SpecError, apply_overrides, build_spec
from tests.engine.small_nets import SMALL
from worker.engine.checkpoint import DirectoryCheckpointStore
from worker.engine.sink import MemorySink
from worker.engine.snapshots import DirectorySnapshotStore
from worker.engine.threads import torch_threads
from worker.engine.trainer import Trainer


def spec(model: str = "mlp", **over) -> RunSpec:
    return RunSpec.model_validate({**SMALL[model], "steps": 8, "seed": 5, "device": "cpu",
                                   "eval_every": 3, "norm_groups": 2, **over})


class CountingStore(DirectorySnapshotStore):
    """A real directory store that also remembers which steps it was asked to save."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.saved: list[int] = []

    def save(self, step, state) -> None:
        self.saved.append(step)
        super().save(step, state)


def equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_step_zero_and_the_last_step_are_always_saved(tmp_path):
    store = DirectorySnapshotStore(tmp_path / "a")
    Trainer(spec(), tmp_path).run(MemorySink(), snapshots=store)
    assert store.steps() == [0, 8]
    store = DirectorySnapshotStore(tmp_path / "b")
    Trainer(spec(snapshots={"every": 3, "steps": [5, 7]}), tmp_path).run(
        MemorySink(), snapshots=store)
    assert store.steps() == [0, 3, 5, 6, 7, 8]
    state = store.load(5)
    assert state["format"] == 1 and state["step"] == 5
    assert RunSpec.model_validate_json(state["spec"]) == spec(snapshots={"every": 3,
                                                                         "steps": [5, 7]})


@pytest.mark.parametrize("model,norm", [("mlp", "batch"), ("mlp", "none"), ("vgg", "batch")])
def test_the_snapshot_of_step_s_is_w_s(tmp_path, model, norm):
    """Weights and BN buffers equal those of a run stopped before step s, and the snapshot's
    loss on B_s is step s's recorded training loss, bit for bit."""
    s = spec(model, norm=norm, snapshots={"every": 2})
    store = DirectorySnapshotStore(tmp_path / "snaps")
    sink = MemorySink()
    Trainer(s, tmp_path).run(sink, snapshots=store)
    losses = sink.values("train/loss")
    for step in store.steps():
        snap = store.load(step)["model"]
        t = Trainer(s, tmp_path)
        t.run(MemorySink(), max_steps=step)
        assert equal_states(snap, t.net.state_dict()), step
        if step < s.steps:
            fresh = Trainer(s, tmp_path)
            fresh.net.load_state_dict(snap)
            x, y = fresh.batch(step)
            with torch_threads(fresh.threads):  # the run's count: float32 sums depend on it
                loss = fresh.loss_fn(fresh.net(x), y).item()
            assert loss == losses[step], step


@pytest.mark.parametrize("norm", ["batch", "noisy_batch", "none"])
def test_saving_snapshots_leaves_training_bit_identical(tmp_path, norm):
    runs = []
    for store in (None, DirectorySnapshotStore(tmp_path / "snaps")):
        t = Trainer(spec(norm=norm, snapshots={"every": 1}), tmp_path)
        sink = MemorySink()
        t.run(sink, snapshots=store)
        runs.append((t, sink))
    (t0, s0), (t1, s1) = runs
    def measured(sink: MemorySink) -> dict:  # probe timings aside
        return {k: v for k, v in sink.series.items()
                if not k.startswith(("probe_time/", "time/"))}

    assert str(measured(s0)) == str(measured(s1))  # str: NaN-aware, bit-exact repr
    assert equal_states(t0.net.state_dict(), t1.net.state_dict())
    assert torch.equal(t0.noise.get_state(), t1.noise.get_state())
    assert len(DirectorySnapshotStore(tmp_path / "snaps").steps()) == 9


def test_a_resumed_run_saves_no_snapshot_twice_and_ends_like_an_uninterrupted_one(tmp_path):
    s = spec(norm="batch", checkpoint_every=4, snapshots={"every": 2})
    whole = DirectorySnapshotStore(tmp_path / "whole")
    Trainer(s, tmp_path).run(MemorySink(), snapshots=whole)

    ckpts = DirectoryCheckpointStore(tmp_path / "ckpt")
    store = CountingStore(tmp_path / "parts")
    # a crash after step 5: checkpoint at 4, snapshots 0, 2, 4 already on disk
    Trainer(s, tmp_path).run(MemorySink(), checkpoints=ckpts, snapshots=store, max_steps=6)
    assert store.saved == [0, 2, 4]
    Trainer(s, tmp_path).run(MemorySink(), checkpoints=ckpts, snapshots=store)
    assert store.saved == [0, 2, 4, 6, 8]  # step 4 is re-trained from the checkpoint, not saved
    assert store.steps() == whole.steps() == [0, 2, 4, 6, 8]
    for step in whole.steps():
        assert equal_states(store.load(step)["model"], whole.load(step)["model"]), step


def test_no_last_snapshot_when_the_run_stops_early(tmp_path):
    store = DirectorySnapshotStore(tmp_path / "snaps")
    Trainer(spec(), tmp_path).run(MemorySink(), snapshots=store, max_steps=3)
    assert store.steps() == [0]


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_snapshots_load_weights_only_and_a_missing_step_is_named(tmp_path):
    store = DirectorySnapshotStore(tmp_path)
    torch.save({"format": 1, "step": 3, "model": {}, "x": Evil()}, store.path(3))
    with pytest.raises(pickle.UnpicklingError):
        store.load(3)
    with pytest.raises(FileNotFoundError, match="no snapshot of step 7.*saved steps: \\[3\\]"):
        store.load(7)
    (tmp_path / "snap-00000005.pt.tmp").write_bytes(b"half a file")  # an interrupted write
    assert store.steps() == [3]


def test_the_snapshot_spec_is_validated_and_set_by_overrides():
    s = build_spec(apply_overrides({"steps": 50}, {"snapshots.every": 10,
                                                   "snapshots.steps": [7, 3, 7]}))
    assert s.snapshots.every == 10 and s.snapshots.steps == [3, 7]
    with pytest.raises(SpecError, match="exceed the run's 50 steps"):
        build_spec({"steps": 50, "snapshots": {"steps": [60]}})
    with pytest.raises(SpecError, match="snapshots.steps"):
        build_spec({"snapshots": {"steps": [-1]}})
    with pytest.raises(SpecError, match="snapshots.every"):
        build_spec({"snapshots": {"every": -2}})
    with pytest.raises(SpecError, match="snapshots.steps"):
        build_spec({"snapshots": {"steps": list(range(1001))}})
    assert [st for st in range(51) if s.snapshots.due(st, 50)] == [0, 3, 7, 10, 20, 30, 40, 50]
