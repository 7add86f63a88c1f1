"""x axes other than the step (webapp/figures/xaxis.py): epochs as the engine counts them,
samples seen, and wall time interpolated from the sparse `time/wall_s` points, checked against
values worked out by hand and against the engine's own batch order; None where a run lacks
what an axis needs."""

from __future__ import annotations

import math

import pytest

from webapp.figures.xaxis import XAXES, x_values


def run(batch_size, train_size) -> dict:
    return {"id": 1, "x_axis": {"batch_size": batch_size, "train_size": train_size}}


STEPS = [0, 1, 390, 391, 780.5]


def test_step_is_the_step():
    assert x_values(STEPS, "step", {}) == [0.0, 1.0, 390.0, 391.0, 780.5]


def test_epochs_drop_the_incomplete_last_batch_like_the_engine():
    # CIFAR-10 at batch 128: 390 whole batches an epoch (50000 / 128 = 390.6).
    assert x_values(STEPS, "epoch", run(128, 50_000)) == [0, 1 / 390, 1.0, 391 / 390,
                                                          780.5 / 390]


def test_epochs_agree_with_the_engines_batch_order():
    torch = pytest.importorskip("torch")  # noqa: F841 - BatchOrder draws with torch
    from worker.engine.data.batches import BatchOrder

    order = BatchOrder(103, 10, seed=0)
    steps = list(range(35))
    epochs = x_values(steps, "epoch", run(10, 103))
    for s, e in zip(steps, epochs, strict=True):
        assert math.floor(e) == s // order.batches_per_epoch


def test_full_batch_is_one_step_per_epoch():
    for bs in (None, 1000, 5000):
        assert x_values([0, 3, 7], "epoch", run(bs, 1000)) == [0.0, 3.0, 7.0]
        assert x_values([0, 3, 7], "samples", run(bs, 1000)) == [0.0, 3000.0, 7000.0]


def test_samples_seen():
    assert x_values(STEPS, "samples", run(128, 50_000)) == [0.0, 128.0, 49_920.0, 50_048.0,
                                                            99_904.0]
    # The batch size alone is enough for samples, not for epochs.
    assert x_values([2], "samples", run(32, None)) == [64.0]
    assert x_values([2], "epoch", run(32, None)) is None


@pytest.mark.parametrize("r", [{}, {"x_axis": None}, run(None, None),
                               {"x_axis": {"batch_size": 0, "train_size": -3}},
                               {"x_axis": {"batch_size": "big", "train_size": None}}])
def test_runs_without_sizes_have_no_epoch_or_samples_axis(r):
    assert x_values([0, 1], "epoch", r) is None
    assert x_values([0, 1], "samples", r) is None


def test_wall_time_interpolates_between_points():
    wall = ([0, 100, 200], [0.5, 10.5, 30.5])
    got = x_values([0, 50, 100, 150, 200, 175.5], "wall", {}, wall=wall)
    assert got == pytest.approx([0.5, 5.5, 10.5, 20.5, 30.5, 25.6])


def test_wall_time_past_the_last_point_goes_on_at_the_recent_rate():
    wall = ([0, 100, 200], [0.5, 10.5, 30.5])  # 0.2 s a step over the last stretch
    assert x_values([300, 250], "wall", {}, wall=wall) == pytest.approx([50.5, 40.5])


def test_wall_time_before_the_first_point_never_goes_below_zero():
    wall = ([10, 20], [1.0, 3.0])  # 0.2 s a step: step 5 at 0 s, step 0 would be -1 s
    assert x_values([0, 5, 7.5, 10], "wall", {}, wall=wall) == pytest.approx([0, 0, 0.5, 1])


def test_wall_time_is_monotone_in_the_step():
    wall = ([0, 7, 30, 31, 90], [0.1, 0.9, 2.0, 2.0, 9.0])
    steps = [i * 0.5 for i in range(250)]
    got = x_values(steps, "wall", {}, wall=wall)
    assert all(a <= b for a, b in zip(got, got[1:], strict=False))


def test_wall_time_from_one_point_or_messy_points():
    # One point after step 0: the line through the origin.
    assert x_values([0, 50, 200], "wall", {}, wall=([100], [4.0])) == pytest.approx(
        [0.0, 2.0, 8.0])
    # Unsorted, repeated, non-finite and null points: sorted, last value wins, skipped.
    wall = ([20, 0, 10, 10, 30, None], [2.0, 0.0, 9.0, 1.0, math.nan, 5.0])
    assert x_values([5, 15], "wall", {}, wall=wall) == pytest.approx([0.5, 1.5])


@pytest.mark.parametrize("wall", [None, ([], []), ([0], [0.3]), ([5], [math.inf]),
                                  ([0, 0], [1.0, 2.0])])
def test_no_wall_axis_without_enough_points(wall):
    assert x_values([0, 1, 2], "wall", {}, wall=wall) is None


def test_unknown_axis_is_an_error():
    assert XAXES == ("step", "epoch", "samples", "wall")
    with pytest.raises(ValueError, match="x axis"):
        x_values([0], "time", {})
