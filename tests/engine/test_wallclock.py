"""time/wall_s: sparse, monotone, continued by a resumed run, and invisible to training."""

from __future__ import annotations

import pytest
import torch

from tests.engine.small_nets import SMALL
from tests.engine.test_trainer import ALL_PROBES, bits, spec, state_of, stop_at
from worker.engine.checkpoint import DirectoryCheckpointStore
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer
from worker.engine.wallclock import WALL_KEY, WallClock


class FakeClock:
    """A clock the test moves by hand: exact elapsed values."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def points_of(clock: WallClock, steps) -> list[int]:
    return [s for s in steps if clock.due(s) and clock.point(s) is not None]


def test_periodic_points_are_one_per_percent_and_at_the_first_step():
    clock = WallClock(10_000, clock=FakeClock())
    assert clock.period == 100
    assert points_of(clock, range(10_000)) == [0, *range(99, 10_000, 100)]  # 101 points


def test_short_runs_get_a_point_per_step_and_odd_lengths_round_the_period_up():
    assert points_of(WallClock(8, clock=FakeClock()), range(8)) == list(range(8))
    clock = WallClock(250, clock=FakeClock())  # ceil(2.5) = 3 steps a period
    got = points_of(clock, range(250))
    assert clock.period == 3 and got == [0, *range(2, 250, 3)]
    assert len(got) <= 101


def test_sparse_steps_get_a_point_at_the_first_step_seen_at_or_past_each_period_end():
    clock = WallClock(1000, clock=FakeClock())  # period 10: periods end at 9, 19, 29 ...
    assert points_of(clock, [0, 5, 9, 12, 15, 25, 27, 40]) == [0, 9, 25, 40]


def test_unknown_length_thins_out_with_the_step():
    clock = WallClock(None, clock=FakeClock())
    got = points_of(clock, range(100_000))
    assert got[:101] == list(range(0, 1010, 10))  # every 10 steps, then 1 % of the steps so far
    gaps = [b - a for a, b in zip(got, got[1:], strict=False)]
    assert gaps == [max(10, a // 100) for a in got[:-1]]
    assert len(got) < 600  # 100 to step 1,000, then about 230 per factor 10: not 100,000


def test_a_point_never_goes_back_and_the_count_starts_at_the_base():
    fake = FakeClock()
    clock = WallClock(100, base=7.5, clock=fake)
    fake.now += 2.0
    assert clock.point(3) == {WALL_KEY: 9.5}
    assert clock.point(3) is None and clock.point(2) is None  # one per step, only forward
    assert clock.elapsed() == 9.5


def wall(sink: MemorySink) -> dict[int, float]:
    return sink.series[WALL_KEY]


def assert_monotone(points: dict[int, float]) -> None:
    values = [points[s] for s in sorted(points)]
    assert values == sorted(values) and values[0] >= 0.0


def test_a_run_records_sparse_monotone_points_first_last_and_at_checkpoints(tmp_path):
    s = spec("mlp", steps=300, checkpoint_every=50, eval_every=0)  # period 3
    sink = MemorySink()
    Trainer(s, tmp_path).run(sink, checkpoints=DirectoryCheckpointStore(tmp_path / "c"))
    steps = sorted(wall(sink))
    assert steps == sorted({0, *range(2, 300, 3), *range(49, 300, 50), 300})
    assert_monotone(wall(sink))
    assert len(steps) < 300 / 2  # never one per step on a run of more than 100 steps


def test_a_cancelled_or_diverged_run_ends_with_a_point_at_its_last_step(tmp_path):
    sink = MemorySink()
    Trainer(spec(steps=500, eval_every=0), tmp_path).run(sink, should_stop=stop_at(7, "cancel"))
    assert sorted(wall(sink)) == [0, 4, 6]  # period 5: steps 0 and 4, then the last one
    diverged = MemorySink()
    s = spec("dln", lr=1.0, steps=300, on_nonfinite="stop", eval_every=0)
    result = Trainer(s, tmp_path).run(diverged)
    assert result.status == "diverged"
    assert max(wall(diverged)) == result.diverged_at  # no point at T: the run never got there


def test_a_resumed_run_continues_the_count_from_its_checkpoint(tmp_path):
    s = spec("mlp", steps=40, checkpoint_every=10, eval_every=0)
    store = DirectoryCheckpointStore(tmp_path / "c")
    first = MemorySink()
    Trainer(s, tmp_path).run(first, checkpoints=store, should_stop=stop_at(25, "pause"))
    saved = torch.load(store._paths()[-1], weights_only=True)
    assert saved["step"] == 25 and saved["wall_s"] >= max(wall(first).values())
    second = MemorySink()
    Trainer(s, tmp_path).run(second, checkpoints=store)
    assert min(wall(second)) == 25  # a point right after the resume
    assert min(wall(second).values()) > saved["wall_s"]  # the count goes on, not from 0
    merged = {**wall(first), **wall(second)}
    assert_monotone(merged)
    assert max(merged) == 40


def test_a_run_resumed_after_a_crash_adds_points_only_after_the_dead_attempt_s(tmp_path):
    """A worker dies 13 steps past its checkpoint at 20 with its points up to step 32 stored.
    The store ignores rewrites (first write wins, as the SQL sink does), so the resumed run
    must neither write a point at a step the dead attempt already has nor one before it:
    its seconds start from the dead attempt's largest, and an earlier step carrying them
    would make the series go back (the clean-clone CI caught it once)."""
    s = spec("mlp", steps=60, checkpoint_every=10, eval_every=0)  # a point every step
    store = DirectoryCheckpointStore(tmp_path / "c")
    dead = MemorySink()
    Trainer(s, tmp_path).run(dead, checkpoints=store, max_steps=33)  # stands for the crash
    assert torch.load(store._paths()[-1], weights_only=True)["step"] == 30
    stored = wall(dead)
    assert max(stored) == 32
    resumed = MemorySink()
    Trainer(s, tmp_path).run(resumed, checkpoints=store,
                             wall_after=(max(stored), max(stored.values())))
    assert min(wall(resumed)) == 33  # the first step after the stored points
    assert min(wall(resumed).values()) >= max(stored.values())
    merged = {**wall(resumed), **stored}  # first write wins
    assert_monotone(merged)
    assert max(merged) == 60


def test_a_checkpoint_from_before_the_clock_resumes_from_zero(tmp_path):
    s = spec("mlp", steps=12, checkpoint_every=4, eval_every=0)
    store = DirectoryCheckpointStore(tmp_path / "c")
    Trainer(s, tmp_path).run(MemorySink(), checkpoints=store, max_steps=4)
    state = torch.load(store._paths()[-1], weights_only=True)
    del state["wall_s"]
    torch.save(state, store._paths()[-1])
    sink = MemorySink()
    assert Trainer(s, tmp_path).run(sink, checkpoints=store).status == "succeeded"
    assert_monotone(wall(sink))


@pytest.mark.parametrize("model", list(SMALL))
def test_the_clock_changes_no_weight(tmp_path, model):
    """Points at every step, at the default cadence, and none but the end: bit-identical
    losses, weights, BN buffers, noise and optimiser state."""
    runs = {}
    for name, points in (("every", 10**9), ("default", 100), ("sparse", None)):
        t = Trainer(spec(model, steps=12, norm="batch", probes=ALL_PROBES), tmp_path)
        t.wall_points = points
        sink = MemorySink()
        t.run(sink, checkpoints=DirectoryCheckpointStore(tmp_path / name))
        runs[name] = (t, sink)
    assert len(wall(runs["every"][1])) == 13 and sorted(wall(runs["sparse"][1])) == [11, 12]
    t0, s0 = runs["sparse"]
    for name in ("every", "default"):
        t, sink = runs[name]
        assert bits(sink.values("train/loss")) == bits(s0.values("train/loss")), name
        assert bits(sink.values("test/loss")) == bits(s0.values("test/loss")), name
        a, b = state_of(t), state_of(t0)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
        assert t.optimizer.state_dict() == t0.optimizer.state_dict(), name


def test_x_axis_is_the_batch_size_drawn_and_the_training_set_loaded(tmp_path):
    t = Trainer(spec("mlp", batch_size=32), tmp_path)
    assert t.x_axis() == {"batch_size": 32, "train_size": t.data.n_train}
    assert t.info["x_axis"] == t.x_axis()
    full = Trainer(spec("dln"), tmp_path)
    assert full.x_axis() == {"batch_size": None, "train_size": 40}
    huge = Trainer(spec("mlp", batch_size=10**6), tmp_path)  # >= n: full batch
    assert huge.x_axis()["batch_size"] is None
