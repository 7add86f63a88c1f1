"""The client's paging rules on made-up answers: where a downsampled answer's points can lie,
and how exact keys are escaped for a route that reads globs."""

from __future__ import annotations

import random

from landscope.client.paging import exact_key, narrow


def buckets(points: list[int], width: int) -> list[float]:
    """Bucket steps as the server computes them: the middle of each bucket's first and last."""
    by: dict[int, list[int]] = {}
    for p in sorted(points):
        by.setdefault(p // width, []).append(p)
    return [(b[0] + b[-1]) / 2 for _, b in sorted(by.items())]


def test_the_narrowed_window_holds_every_point():
    rng = random.Random(0)
    for _ in range(2000):
        width = rng.randint(1, 50)
        points = rng.sample(range(0, 2000), rng.randint(2, 40))
        # clusters at bucket edges make adjacent bucket steps close (a gap of 1)
        points += [width * k - 1 for k in range(1, 4)] + [width * k for k in range(1, 4)]
        steps = buckets(points, width)
        a, b = narrow(steps, 0, 10**6)
        assert a <= min(points) and max(points) <= b, (width, sorted(points), steps, a, b)


def test_a_single_bucket_narrows_nothing():
    assert narrow([5.0], 0, 100) == (0, 100)
    assert narrow([], 3, 9) == (3, 9)


def test_exact_keys_match_only_themselves():
    from fnmatch import fnmatchcase

    for key in ["train/loss", "weird[a]*?", "x[!y]", "[", "*"]:
        pattern = exact_key(key)
        assert pattern is not None and fnmatchcase(key, pattern)
        assert not fnmatchcase(key + "z", pattern)
    assert exact_key("a,b") is None
