"""Trajectory PCA against a synthetic path in a known plane and a direct SVD."""

from __future__ import annotations

import pytest
import torch

from worker.engine.geometry.flat import dot, flatten, norm, unflatten
from worker.engine.geometry.pca import pca_directions

SHAPES = {"a.weight": (4, 3), "a.bias": (4,), "b.weight": (2, 4, 3)}


def _plane(n: int = 9, seed: int = 0):
    """theta_T, orthonormal u, v, and snapshots theta_T + a_i u + b_i v whose coordinate
    columns are orthogonal with |a| > |b| (so u, v are the principal axes, in that order)."""
    g = torch.Generator().manual_seed(seed)
    final = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in SHAPES.items()}
    size = sum(t.numel() for t in final.values())
    q, _ = torch.linalg.qr(torch.randn(size, 2, generator=g, dtype=torch.float64))
    u, v = q[:, 0], q[:, 1]
    t = torch.linspace(-1, 1, n, dtype=torch.float64)
    a = 3.0 * t  # odd
    b = t**2 - float((t**2).mean())  # even, zero mean: sum a_i b_i = 0
    snaps = [{k: x + final[k] for k, x in unflatten(ai * u + bi * v, final).items()}
             for ai, bi in zip(a, b, strict=True)]
    return snaps, final, u, v, a, b


def test_a_trajectory_in_a_known_plane_gives_its_axes_variance_and_coordinates():
    snaps, final, u, v, a, b = _plane()
    res = pca_directions(snaps, final, k=2)
    ev = res.explained_variance
    assert sum(ev) == pytest.approx(1.0, abs=1e-12)
    total = float((a**2).sum() + (b**2).sum())
    assert ev[0] == pytest.approx(float((a**2).sum()) / total, rel=1e-12)
    assert ev[1] == pytest.approx(float((b**2).sum()) / total, rel=1e-12)
    d1, d2 = (flatten(d) for d in res.directions)
    assert norm(res.directions[0]) == pytest.approx(1.0, rel=1e-12)
    assert abs(dot(res.directions[0], res.directions[1])) < 1e-12
    # The axes are u and v up to sign; the coordinates are (a_i, b_i) with the same signs.
    s1 = float(torch.sign(d1 @ u))
    s2 = float(torch.sign(d2 @ v))
    torch.testing.assert_close(d1, s1 * u, rtol=0, atol=1e-12)
    torch.testing.assert_close(d2, s2 * v, rtol=0, atol=1e-12)
    coords = torch.tensor(res.coords, dtype=torch.float64)
    assert coords.shape == (len(snaps), 2)
    torch.testing.assert_close(coords[:, 0], s1 * a, rtol=0, atol=1e-10)
    torch.testing.assert_close(coords[:, 1], s2 * b, rtol=0, atol=1e-10)


def test_sign_convention_largest_magnitude_entry_is_positive():
    for seed in range(4):
        snaps, final, *_ = _plane(seed=seed)
        res = pca_directions(snaps, final, k=2)
        for d in res.directions:
            flat = flatten(d)
            assert float(flat[torch.argmax(flat.abs())]) > 0
        # Flipping every snapshot to the other side flips nothing in the result's signs.
        mirrored = [{k: 2 * final[k] - s[k] for k in final} for s in snaps]
        other = pca_directions(mirrored, final, k=2)
        for d, e in zip(res.directions, other.directions, strict=True):
            torch.testing.assert_close(flatten(d), flatten(e), rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.tensor(other.coords), -torch.tensor(res.coords),
                                   rtol=0, atol=1e-10)


def test_general_trajectory_matches_a_direct_svd():
    g = torch.Generator().manual_seed(3)
    final = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in SHAPES.items()}
    snaps = [{k: t + torch.randn(t.shape, generator=g, dtype=torch.float64) * (i + 1)
              for k, t in final.items()} for i in range(6)]
    snaps.append({k: t.clone() for k, t in final.items()})  # theta_T itself: the origin
    res = pca_directions(snaps, final, k=3)
    m = torch.stack([flatten(s) - flatten(final) for s in snaps])
    _, s, vh = torch.linalg.svd(m, full_matrices=False)
    ratio = (s**2 / (s**2).sum())[:3]
    torch.testing.assert_close(torch.tensor(res.explained_variance, dtype=torch.float64), ratio,
                               rtol=1e-10, atol=0)
    for j, d in enumerate(res.directions):
        assert abs(float(flatten(d) @ vh[j])) == pytest.approx(1.0, abs=1e-10)
    coords = torch.tensor(res.coords, dtype=torch.float64)
    dirs = torch.stack([flatten(d) for d in res.directions])
    torch.testing.assert_close(coords, m @ dirs.T, rtol=0, atol=1e-10)
    torch.testing.assert_close(coords[-1], torch.zeros(3, dtype=torch.float64), rtol=0,
                               atol=1e-12)


def test_directions_take_the_final_weights_dtype_and_shapes():
    snaps, final, *_ = _plane()
    f32 = {k: t.float() for k, t in final.items()}
    res = pca_directions([{k: t.float() for k, t in s.items()} for s in snaps], f32, k=1)
    (d,) = res.directions
    assert list(d) == list(final)
    assert all(d[k].dtype == torch.float32 and d[k].shape == final[k].shape for k in final)


def test_degenerate_trajectories_are_refused():
    snaps, final, *_ = _plane()
    with pytest.raises(ValueError, match="no extent"):
        pca_directions([final, final], final, k=1)
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        pca_directions(snaps[:1], final, k=2)
    line = [{k: final[k] + c * torch.ones_like(final[k]) for k in final} for c in (1.0, 2.0, 3.0)]
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        pca_directions(line, final, k=2)
