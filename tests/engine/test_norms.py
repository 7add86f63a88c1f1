"""Normalisation layers: noisy BN (Algorithm 1), Lp norms, layer/group norms (paper-protocol.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from server.spec import NORMS, RunSpec
from worker.engine.norms import LpNorm, NoiseInjection, make_norm

SPEC = RunSpec()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noisy_bn_fit(n: int = 50_000, c: int = 16, seed: int = 0):
    """One training forward of noisy BN on a wide fixed input, with the BN output it perturbed.

    Per unit j, out = s_ij * a_ij + m_ij with a the BN output: regressing out on a gives sigma_j
    (slope) and mu_j (intercept); regressing the squared residual on a^2 gives scale_std^2 (slope)
    and jitter^2 / 3 (intercept, the variance of U(-jitter, jitter)).
    """
    x = torch.randn(n, c, generator=gen(123), dtype=torch.float64) * 3 + 1
    noisy = make_norm("noisy_batch", c, "linear", SPEC, gen(seed)).double().train()
    plain = make_norm("batch", c, "linear", SPEC, gen(seed)).double().train()
    with torch.no_grad():
        out, a = noisy(x).numpy(), plain(x).numpy()
    fits = []
    for j in range(c):
        slope, icept = np.polyfit(a[:, j], out[:, j], 1)
        resid = out[:, j] - (slope * a[:, j] + icept)
        var_slope, var_icept = np.polyfit(a[:, j] ** 2, resid**2, 1)
        fits.append((slope, icept, var_slope, var_icept))
    return np.array(fits)


def test_noisy_bn_recovers_algorithm_1_parameters():
    fits = noisy_bn_fit()
    sigma, mu, scale_var, jitter_var = fits.T
    assert np.all((mu > -0.6) & (mu < 0.6))
    assert mu.max() - mu.min() > 0.2  # drawn per unit, not a constant
    assert np.all((sigma > 1 - 0.01) & (sigma < 1.25 + 0.01))
    assert sigma.max() - sigma.min() > 0.05
    assert np.sqrt(scale_var.mean()) == pytest.approx(0.1, rel=0.1)  # a std, not a variance
    assert np.all(np.abs(np.sqrt(scale_var) - 0.1) < 0.015)  # per element, in every unit
    assert np.sqrt(3 * jitter_var.mean()) == pytest.approx(0.1, rel=0.2)


def test_noise_follows_the_spec_exactly_without_jitter():
    noise = {"mean_range": 2.0, "scale_low": 3.0, "scale_high": 4.0}
    noise |= {"mean_jitter": 0.0, "scale_std": 0.0}
    spec = RunSpec(noise=noise)
    layer = make_norm("noise", 32, "linear", spec, gen())
    assert isinstance(layer, NoiseInjection)
    a = torch.randn(64, 32, generator=gen(1))
    out = layer(a)
    sigma = (out[1] - out[0]) / (a[1] - a[0])
    mu = out[0] - sigma * a[0]
    torch.testing.assert_close(out, sigma * a + mu)  # one (mu_j, sigma_j) per unit
    assert torch.all((mu.abs() <= 2.0 + 1e-4) & (sigma >= 3.0 - 1e-4) & (sigma <= 4.0 + 1e-4))


def test_noisy_bn_eval_is_plain_bn():
    x = torch.randn(32, 4, 5, 5, generator=gen(2)) * 2 + 0.5
    noisy = make_norm("noisy_batch", 4, "conv", SPEC, gen())
    plain = make_norm("batch", 4, "conv", SPEC, gen())
    for _ in range(3):  # same running statistics: the noise comes after BN
        noisy(x), plain(x)
    noisy.eval(), plain.eval()
    torch.testing.assert_close(noisy(x), plain(x), rtol=0, atol=0)
    noise_only = make_norm("noise", 4, "conv", SPEC, gen()).eval()
    assert torch.equal(noise_only(x), x)


def test_noise_is_reproducible_fresh_every_forward_and_leaves_global_rng_alone():
    x = torch.randn(16, 8, generator=gen(3))
    a = make_norm("noisy_batch", 8, "linear", SPEC, gen(7))
    b = make_norm("noisy_batch", 8, "linear", SPEC, gen(7))
    state = torch.get_rng_state()
    first = a(x)
    assert torch.equal(first, b(x))
    assert not torch.allclose(first, a(x))  # a new draw at every training forward
    assert torch.equal(torch.get_rng_state(), state)


def test_conv_noise_varies_over_positions_and_gradients_flow():
    layer = make_norm("noise", 3, "conv", SPEC, gen())
    a = torch.ones(2, 3, 4, 4, requires_grad=True)
    out = layer(a)
    per_position = out.detach().flatten(2)  # (N, C, H*W)
    assert (per_position.std(dim=2) > 0).all()
    out.sum().backward()
    assert a.grad is not None and (a.grad != 0).all()  # d out / d a = s_ij


def test_noise_rejects_a_generator_on_another_device():
    layer = make_norm("noise", 3, "linear", SPEC, gen())
    with pytest.raises(RuntimeError, match="generator is on cpu"):
        layer(torch.ones(2, 3, device="meta"))


def lp_reference(a: np.ndarray, p: float, eps: float) -> np.ndarray:
    """The protocol's formula, literally, one unit at a time."""
    out = np.empty_like(a)
    for j in range(a.shape[1]):
        v = a[:, j]
        denom = np.abs(v).max() if math.isinf(p) else np.mean(np.abs(v) ** p) ** (1 / p)
        out[:, j] = (v - v.mean()) / (denom + eps)
    return out


@pytest.mark.parametrize("name,p", [("l1", 1.0), ("l2", 2.0), ("linf", math.inf)])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_lp_norm_matches_formula(name, p, kind):
    shape = (6, 5, 3, 4) if kind == "conv" else (20, 5)
    x = torch.randn(*shape, generator=gen(4), dtype=torch.float64) * 2 + 0.7
    layer = make_norm(name, 5, kind, SPEC, gen()).double()
    assert isinstance(layer, LpNorm) and layer.p == p
    units_last = x.transpose(0, 1).reshape(5, -1).T.numpy()  # (N*H*W, C)
    expected = lp_reference(units_last, p, SPEC.norm_eps)
    got = layer(x).detach().transpose(0, 1).reshape(5, -1).T.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.mean(axis=0), 0, atol=1e-12)
    scaled = layer(17.0 * x).detach().transpose(0, 1).reshape(5, -1).T.numpy()
    np.testing.assert_allclose(scaled, got, atol=1e-4)  # positive scale invariance, up to eps
    layer.eval()  # no running statistics: eval normalises with the batch too
    assert torch.equal(layer(x), layer.train()(x))


def test_lp_norm_affine_is_gamma_beta():
    layer = make_norm("l2", 3, "linear", SPEC, gen())
    names = dict(layer.named_parameters())
    assert set(names) == {"weight", "bias"}
    assert torch.equal(names["weight"], torch.ones(3))
    assert torch.equal(names["bias"], torch.zeros(3))
    x = torch.randn(10, 3, generator=gen(5))
    base = layer(x).detach()
    with torch.no_grad():
        layer.weight.fill_(2.0), layer.bias.fill_(-1.0)
    torch.testing.assert_close(layer(x), 2 * base - 1)


@pytest.mark.parametrize("name", ["l1", "l2", "linf"])
def test_lp_norm_gradients(name):
    x = torch.randn(5, 3, generator=gen(6), dtype=torch.float64) + 0.3
    x.requires_grad_(True)
    layer = make_norm(name, 3, "linear", SPEC, gen()).double()
    # Random inputs avoid the kinks of |a| at 0 and of max at ties, so all three are smooth here.
    assert torch.autograd.gradcheck(layer, (x,))
    layer(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert layer.weight.grad is not None and layer.bias.grad is not None


def test_lp_norm_rejects_wrong_input_rank():
    with pytest.raises(ValueError, match="4-d"):
        make_norm("l1", 3, "conv", SPEC, gen())(torch.ones(2, 3))


@pytest.mark.parametrize("kind,shape", [("conv", (4, 8, 3, 3)), ("linear", (4, 8))])
@pytest.mark.parametrize("name,groups", [("layer", 1), ("group", 4)])
def test_layer_and_group_norm_normalise(name, groups, kind, shape):
    layer = make_norm(name, 8, kind, RunSpec(norm_groups=4), gen())
    x = torch.randn(*shape, generator=gen(7), dtype=torch.float64) * 5 + 3
    per_group = x.reshape(shape[0], groups, -1)  # statistics per sample and group of channels
    mean = per_group.mean(-1, keepdim=True)
    var = per_group.var(-1, unbiased=False, keepdim=True)
    expected = ((per_group - mean) / torch.sqrt(var + SPEC.norm_eps)).reshape(shape)
    torch.testing.assert_close(layer.double()(x), expected)


def test_group_norm_rejects_groups_that_do_not_divide():
    with pytest.raises(ValueError, match="norm_groups=8"):
        make_norm("group", 12, "conv", RunSpec(), gen())


@pytest.mark.parametrize("name", NORMS)
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_every_norm_starts_at_gamma_one_beta_zero(name, kind):
    layer = make_norm(name, 8, kind, SPEC, gen())
    for pname, param in layer.named_parameters():
        want = torch.ones_like(param) if pname.endswith("weight") else torch.zeros_like(param)
        assert torch.equal(param, want), pname
    if name == "batch":
        assert isinstance(layer, nn.BatchNorm2d if kind == "conv" else nn.BatchNorm1d)
    if name == "none":
        assert isinstance(layer, nn.Identity)
