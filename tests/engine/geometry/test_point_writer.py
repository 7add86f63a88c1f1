"""PointWriter: theta + sum_i c_i d_i, with a grid row's base kept between points."""

from __future__ import annotations

import pytest
import torch

from worker.engine.geometry.point_writer import PointWriter


def _operands(n_dirs: int, shapes=((7, 5), (5,), (3, 7))):
    g = torch.Generator().manual_seed(11)
    theta = [torch.randn(s, generator=g) for s in shapes]
    dirs = [[torch.randn(s, generator=g) for s in shapes] for _ in range(n_dirs)]
    return theta, dirs


def _written(writer: PointWriter, c) -> list[torch.Tensor]:
    out = [torch.full_like(t, float("nan")) for t in writer.theta]
    writer.write(out, c)
    return out


@pytest.mark.parametrize("n_dirs", [0, 1, 2, 3])
def test_a_kept_base_gives_the_bits_of_a_fresh_writer_in_any_order(n_dirs):
    theta, dirs = _operands(n_dirs)
    points = [tuple(0.1 * (i + 1) * (-1) ** (i + j) for j in range(n_dirs)) for i in range(6)]
    points += [(0.7, *p[1:]) for p in points if n_dirs]  # the same rows again, revisited
    kept = PointWriter(theta, dirs)
    for c in points + points[::-1]:
        got = _written(kept, c)
        fresh = _written(PointWriter(theta, dirs), c)
        assert all(torch.equal(a, b) for a, b in zip(got, fresh, strict=True))
        want = [t.double() + sum((ci * d[i].double() for ci, d in zip(c, dirs, strict=True)),
                                 torch.zeros(()))
                for i, t in enumerate(theta)]
        assert all(torch.allclose(a.double(), w, rtol=1e-6, atol=1e-6)
                   for a, w in zip(got, want, strict=True))


def test_one_flat_tensor_gives_the_bits_of_per_tensor_writes():
    theta, dirs = _operands(2)
    flat_theta = [torch.cat([t.reshape(-1) for t in theta])]
    flat_dirs = [[torch.cat([t.reshape(-1) for t in d])] for d in dirs]
    per, flat = PointWriter(theta, dirs), PointWriter(flat_theta, flat_dirs)
    for c in [(0.3, -0.2), (-0.9, -0.2), (0.123, 0.456)]:
        a = torch.cat([t.reshape(-1) for t in _written(per, c)])
        assert torch.equal(a, _written(flat, c)[0])


def test_a_point_needs_one_coordinate_per_direction():
    theta, dirs = _operands(2)
    with pytest.raises(ValueError, match="2 directions"):
        _written(PointWriter(theta, dirs), (0.5,))
