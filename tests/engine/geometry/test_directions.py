"""Flat vectors and filter-normalised directions, against brute-force computations."""

from __future__ import annotations

import math

import torch

from server.spec import RunSpec
from worker.engine.geometry.directions import (
    filter_normalize,
    orthogonalize,
    random_direction,
    raw_direction,
)
from worker.engine.geometry.flat import dot, flatten, norm, unflatten
from worker.engine.models import build_model


def _mlp(norm_name: str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    spec = RunSpec(model="mlp", depth=3, width=8, norm=norm_name, seed=3)
    net = build_model(spec, (5,), 3, torch.Generator()).to(dtype)
    # Non-trivial 1-D parameters, so that keeping them has something to scale to.
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 1:
                p.uniform_(-1, 1, generator=torch.Generator().manual_seed(p.numel()))
    return {n: p.detach() for n, p in net.named_parameters()}


def test_flatten_unflatten_dot_norm_match_brute_force():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g),
         "c": torch.randn(2, 2, 2, generator=g)}
    b = {n: torch.randn(t.shape, generator=g) for n, t in a.items()}
    flat = flatten(a)
    assert flat.shape == (12 + 4 + 8,)
    assert torch.equal(flat[:12], a["w"].reshape(-1)) and torch.equal(flat[12:16], a["b"])
    back = unflatten(flat, a)
    assert list(back) == list(a) and all(torch.equal(back[n], a[n]) for n in a)
    expect = sum(float((a[n].double() * b[n].double()).sum()) for n in a)
    assert math.isclose(dot(a, b), expect, rel_tol=1e-12)
    assert math.isclose(norm(a), float(flatten(a).double().norm()), rel_tol=1e-12)


def test_every_filter_has_thetas_norm_and_1d_parameters_are_zero():
    theta = _mlp("batch", torch.float64)
    d = random_direction(theta, seed=7)
    assert list(d) == list(theta)
    for n, t in theta.items():
        assert d[n].shape == t.shape and d[n].dtype == t.dtype
        if t.dim() <= 1:
            assert torch.count_nonzero(d[n]) == 0, n
            continue
        dn = d[n].reshape(t.shape[0], -1).norm(dim=1)
        tn = t.reshape(t.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(dn, tn, rtol=1e-12, atol=0)
        # The direction is the raw Gaussian rescaled per filter, not any vector of that norm.
        raw = raw_direction(theta, 7)[n].reshape(t.shape[0], -1)
        ratio = d[n].reshape(t.shape[0], -1) / raw
        torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-12, atol=0)


def test_keep_1d_scales_one_dimensional_parameters_to_thetas_norm():
    theta = _mlp("batch", torch.float64)
    d = random_direction(theta, seed=7, keep_1d=True)
    ones = [n for n, t in theta.items() if t.dim() == 1]
    assert ones
    for n in ones:
        assert math.isclose(float(d[n].norm()), float(theta[n].norm()), rel_tol=1e-12)
    # The higher-dimensional parameters are the same as without keep_1d.
    plain = random_direction(theta, seed=7)
    for n, t in theta.items():
        if t.dim() > 1:
            assert torch.equal(d[n], plain[n])


def test_zero_filter_stays_zero():
    theta = {"w": torch.ones(3, 4, dtype=torch.float64)}
    d = {"w": torch.tensor([[1.0, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 5]], dtype=torch.float64)}
    out = filter_normalize(d, theta)
    assert torch.count_nonzero(out["w"][1]) == 0
    torch.testing.assert_close(out["w"][0].norm(), torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(out["w"][2], torch.tensor([0, 0, 0, 2.0], dtype=torch.float64))


def test_shared_parameter_names_get_identical_raw_directions_across_nets():
    with_bn, without = _mlp("batch"), _mlp("none")
    shared = sorted(set(with_bn) & set(without))
    assert shared and set(with_bn) - set(without)  # BN adds parameters of its own
    a, b = raw_direction(with_bn, 11), raw_direction(without, 11)
    for n in shared:
        assert torch.equal(a[n], b[n]), n
    # Another label, another seed: different tensors.
    c, e = raw_direction(with_bn, 11, "d2"), raw_direction(with_bn, 12)
    for n in shared:
        assert not torch.equal(a[n], c[n]) and not torch.equal(a[n], e[n]), n
    # Normalised directions of the shared weight matrices agree too (same theta there).
    da, db = random_direction(with_bn, 11), random_direction(without, 11)
    matrices = [n for n in shared if with_bn[n].dim() > 1]
    assert matrices and all(torch.equal(with_bn[n], without[n]) for n in matrices)
    for n in matrices:
        assert torch.equal(da[n], db[n]), n


def test_raw_direction_does_not_depend_on_device_dtype_or_parameter_order():
    theta = _mlp("none")
    reordered = dict(reversed(list(theta.items())))
    a, b = raw_direction(theta, 5), raw_direction(reordered, 5)
    as64 = raw_direction({n: t.double() for n, t in theta.items()}, 5)
    for n in theta:
        assert torch.equal(a[n], b[n])
        assert torch.equal(as64[n], a[n].double())


def test_orthogonalize_gives_zero_dot_and_keeps_the_plane():
    theta = _mlp("batch", torch.float64)
    d1 = random_direction(theta, 1, "d1")
    d2 = random_direction(theta, 1, "d2")
    assert abs(dot(d1, d2)) > 1e-6 * norm(d1) * norm(d2)  # not orthogonal to begin with
    o = orthogonalize(d2, d1)
    assert abs(dot(o, d1)) <= 1e-13 * norm(o) * norm(d1)
    # o = d2 - c d1: the residual of o from d2 is parallel to d1.
    c = dot(d2, d1) / dot(d1, d1)
    for n in theta:
        torch.testing.assert_close(o[n], d2[n] - c * d1[n], rtol=1e-12, atol=1e-15)
    zero = {n: torch.zeros_like(t) for n, t in theta.items()}
    same = orthogonalize(d2, zero)
    assert all(torch.equal(same[n], d2[n]) for n in theta)
