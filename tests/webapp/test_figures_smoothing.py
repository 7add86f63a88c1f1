"""The smoothing slider's filter (webapp/figures/smoothing.py) against TensorBoard's loop as
TensorBoard writes it, against a direct weighted sum written here, and its properties: no
smoothing at weight 0, the first point and a constant series unchanged (the debiasing), uneven
x spacing, and non-finite values skipped without poisoning what follows."""

from __future__ import annotations

import math
import random

import pytest

from webapp.figures.smoothing import ema

NAN, INF = math.nan, math.inf


def tensorboard(values: list[float], w: float) -> list[float]:
    """TensorBoard's resmoothDataset, point-counting, finite values only."""
    last, out = 0.0, []
    for k, v in enumerate(values, start=1):
        last = last * w + (1 - w) * v
        out.append(last / (1 - w ** k))
    return out


def brute(x: list[float], y: list[float | None], w: float) -> list[float | None]:
    """Each output as its own weighted mean of every finite point so far, weight
    w^(distance / median spacing): no recurrence shared with the implementation."""
    good = [(a, b) for a, b in zip(x, y, strict=True)
            if b is not None and math.isfinite(b)]
    gaps = sorted(good[i + 1][0] - good[i][0] for i in range(len(good) - 1))
    gaps = [g for g in gaps if g > 0]
    m = len(gaps) // 2
    unit = gaps[m] if len(gaps) % 2 else (gaps[m - 1] + gaps[m]) / 2
    out: list[float | None] = []
    for xj, yj in zip(x, y, strict=True):
        if yj is None or not math.isfinite(yj):
            out.append(None)
            continue
        ws = [(w ** ((xj - xi) / unit), yi) for xi, yi in good if xi <= xj]
        out.append(sum(a * b for a, b in ws) / sum(a for a, _ in ws))
    return out


def close(a: list[float | None], b: list[float | None], tol: float = 1e-12) -> bool:
    return len(a) == len(b) and all(
        (u is None and v is None) or (u is not None and v is not None
                                       and math.isclose(u, v, rel_tol=tol, abs_tol=tol))
        for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("w", [0.3, 0.6, 0.9, 0.99])
def test_even_spacing_is_tensorboards_filter(w):
    rng = random.Random(1)
    y = [math.sin(i / 7) + rng.gauss(0, 0.3) for i in range(200)]
    x = [10.0 * i + 5 for i in range(200)]  # bucket midpoints: spacing 10, not 1
    assert close(ema(x, y, w), tensorboard(y, w))


@pytest.mark.parametrize("w", [0.5, 0.95])
def test_uneven_spacing_matches_the_direct_weighted_sum(w):
    rng = random.Random(2)
    x = sorted(rng.uniform(0, 1000) for _ in range(120))
    y = [rng.gauss(0, 1) for _ in x]
    got = ema(x, y, w)
    assert close(got, brute(x, y, w))
    # Not point-counting: where spacing is uneven the answer differs from TensorBoard's.
    assert not close(got, tensorboard(y, w), tol=1e-6)


def test_a_gap_fades_the_past_by_the_distance_covered():
    # Three points, then a long gap: after it the old values weigh almost nothing, where a
    # point-counting filter would still give the previous point weight w.
    x, y = [0.0, 1.0, 2.0, 100.0], [0.0, 0.0, 0.0, 1.0]
    out = ema(x, y, 0.6)
    assert out[3] == pytest.approx(1.0, abs=1e-6)
    assert tensorboard(y, 0.6)[3] < 0.6


def test_weight_zero_is_the_data_itself():
    x = [0, 1, 2, 3, 4]
    y = [3.0, None, NAN, -2.5, INF]
    assert ema(x, y, 0.0) == [3.0, None, None, -2.5, None]


def test_first_point_unchanged_and_constant_stays_constant():
    rng = random.Random(3)
    x = sorted(rng.uniform(0, 50) for _ in range(40))
    for w in (0.2, 0.9, 0.999):
        y = [rng.gauss(5, 2) for _ in x]
        assert ema(x, y, w)[0] == y[0]
        assert ema(x, [0.123456789] * len(x), w) == [0.123456789] * len(x)
        # Constant apart from a gap: still exactly constant where drawn.
        assert ema(x, [None, NAN] + [7.25] * (len(x) - 2), w)[2:] == [7.25] * (len(x) - 2)


def test_non_finite_values_are_skipped_not_poisonous():
    x = list(range(10))
    y: list[float | None] = [1.0, 2.0, NAN, 3.0, None, INF, -INF, 4.0, 5.0, 6.0]
    out = ema(x, y, 0.7)
    assert [i for i, v in enumerate(out) if v is None] == [2, 4, 5, 6]
    assert all(math.isfinite(v) for v in out if v is not None)
    assert close(out, brute([float(v) for v in x], y, 0.7))
    # Leading non-finite values: the first finite point is drawn as it is.
    assert ema([0, 1, 2], [NAN, 4.0, 6.0], 0.9)[:2] == [None, 4.0]


def test_linear_change_of_x_changes_nothing():
    rng = random.Random(4)
    x = sorted(rng.uniform(0, 100) for _ in range(60))
    y = [rng.gauss(0, 1) for _ in x]
    epochs = [v / 390 + 3 for v in x]
    assert close(ema(x, y, 0.8), ema(epochs, y, 0.8), tol=1e-9)


def test_output_stays_within_the_data_range():
    rng = random.Random(5)
    x = sorted(rng.uniform(0, 10) for _ in range(100))
    y = [rng.uniform(-3, 8) for _ in x]
    out = ema(x, y, 0.95)
    assert all(-3 <= v <= 8 for v in out)


def test_edge_cases():
    assert ema([], [], 0.5) == []
    assert ema([3], [2.0], 0.5) == [2.0]
    assert ema([1, 1, 1], [1.0, 2.0, 3.0], 0.5) == [1.0, 1.5, 2.0]  # no spread: plain mean
    assert ema([None, 1, 2], [9.0, 1.0, 2.0], 0.5)[0] is None  # no x, nowhere to draw
    with pytest.raises(ValueError):
        ema([0, 1], [1.0, 2.0], 1.0)
    with pytest.raises(ValueError):
        ema([0, 1], [1.0, 2.0], -0.1)
    with pytest.raises(ValueError):
        ema([0, 1], [1.0], 0.5)
