"""Probes on a quadratic loss, where every quantity has an exact closed form.

L(w) = 1/2 (w - c)^T H (w - c), g = H (w - c). Along -g:
    l(eta) = L(w - eta g)                     exactly
    d(eta) = ||H (w - eta g - c) - g|| = eta ||H g||
    beta   = ||H g|| / ||g||                  for every eta
    sharpness = the algebraically largest eigenvalue of H
ICS on a two-block quadratic: after block 1 steps by -lr g_1, the block-2 gradient moves by
exactly -lr H_21 g_1.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from worker.engine.probes.base import ProbeContext
from worker.engine.probes.basic import DistanceProbe, GradNormProbe
from worker.engine.probes.ics import IcsProbe
from worker.engine.probes.landscape import LandscapeProbe
from worker.engine.probes.sharpness import SharpnessProbe

torch.set_default_dtype(torch.float32)
DIM = 6


class TwoBlock(nn.Module):
    """Parameters w1 (first DIM//2 coords) and w2 (the rest); the output is w itself."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w1 = nn.Parameter(w[: DIM // 2].clone())
        self.w2 = nn.Parameter(w[DIM // 2 :].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.w1, self.w2])


def make_problem(eigs: list[float], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=gen, dtype=torch.float64))
    h = q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ q.T
    c = torch.randn(DIM, generator=gen, dtype=torch.float64)
    w = torch.randn(DIM, generator=gen, dtype=torch.float64)
    return h, c, w


def quad_loss(h: torch.Tensor):
    def loss_fn(out: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        r = out - c
        return 0.5 * r @ h @ r

    return loss_fn


def context(h, c, w, lr: float) -> ProbeContext:
    net = TwoBlock(w)
    params = {n: p.detach() for n, p in net.named_parameters()}
    g = h @ (w - c)
    grads = {"w1": g[: DIM // 2].clone(), "w2": g[DIM // 2 :].clone()}
    return ProbeContext(
        step=0, net=net, params=params, grads=grads, x=torch.zeros(1), y=c,
        loss_fn=quad_loss(h), lr=lr, optimizer=torch.optim.SGD(net.parameters(), lr=lr),
    )


EIGS = [10.0, 4.0, 2.0, 1.0, 0.5, -1.5]


@pytest.mark.parametrize("batched", [False, True], ids=["loop", "vmap"])
def test_landscape_matches_closed_form(batched):
    h, c, w = make_problem(EIGS)
    lr = 0.03
    ctx = context(h, c, w, lr)
    probe = LandscapeProbe(every=1, multipliers=[0.5, 1.0, 2.0, 4.0], batched=batched)
    out = probe.measure(ctx)
    assert out.scalars.get("probe_path/landscape_batched") == (1.0 if batched else None)
    g = h @ (w - c)
    hg = float((h @ g).norm())
    for r in out.eta_records:
        v = w - r.eta * g - c
        assert r.eta == pytest.approx(r.multiplier * lr, rel=1e-15)
        assert r.loss == pytest.approx(float(0.5 * v @ h @ v), rel=1e-12)
        assert r.grad_dist == pytest.approx(r.eta * hg, rel=1e-12)
    assert out.scalars["landscape/beta"] == pytest.approx(hg / float(g.norm()), rel=1e-12)
    assert out.scalars["landscape/loss_min"] == min(r.loss for r in out.eta_records)
    assert out.scalars["landscape/loss_max"] == max(r.loss for r in out.eta_records)
    assert out.scalars["landscape/grad_dist_max"] == pytest.approx(4 * lr * hg, rel=1e-12)
    assert out.scalars["landscape/grad_dist_min"] == pytest.approx(0.5 * lr * hg, rel=1e-12)


def sharpness(eigs, *, max_iters=100, tol=1e-3, seed=0, lr=0.1):
    h, c, w = make_problem(eigs, seed=seed)
    probe = SharpnessProbe(every=1, max_iters=max_iters, seed=seed, tol=tol)
    return probe.measure(context(h, c, w, lr=lr)).scalars


def test_sharpness_is_top_eigenvalue():
    out = sharpness(EIGS, tol=0.0)
    # DIM Lanczos steps span the whole space: the top Ritz value is exact (float64 problem).
    assert out["sharpness/top_eig"] == pytest.approx(10.0, rel=1e-9)
    assert out["sharpness/edge"] == pytest.approx(2 / 0.1)
    assert out["sharpness/iters"] == DIM  # never more steps than the dimension


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sharpness_is_the_largest_eigenvalue_not_the_largest_magnitude(seed):
    """The largest-magnitude eigenvalue is -8 (what power iteration finds); the answer is 3."""
    out = sharpness([3.0, 2.0, 1.0, 0.5, 0.1, -8.0], seed=seed, tol=0.0)
    assert out["sharpness/top_eig"] == pytest.approx(3.0, rel=1e-9)


@pytest.mark.parametrize("eigs,top", [
    ([10.0, 4.0, 2.0, 1.0, 0.5, 0.25], 10.0),  # positive definite
    ([-0.5, -1.0, -2.0, -3.0, -4.0, -9.0], -0.5),  # all negative: the one nearest zero
    ([1e-3, -1.0, -2.0, -3.0, -4.0, -20.0], 1e-3),  # tiny positive top under a big negative
])
def test_sharpness_sign_cases(eigs, top):
    out = sharpness(eigs, tol=0.0)
    assert out["sharpness/top_eig"] == pytest.approx(top, rel=1e-9, abs=1e-12)


def test_sharpness_never_exceeds_the_top_and_stops_on_the_tolerance():
    """Stopping rule: the first step k >= 2 whose estimate moved by <= tol x its size. The
    largest Ritz value never exceeds lambda_max and never decreases with k."""
    eigs = [10.0, 9.0, 4.0, 2.0, 1.0, -12.0]
    h, c, w = make_problem(eigs, seed=3)
    estimates = []
    for k in range(1, DIM + 1):
        out = SharpnessProbe(every=1, max_iters=k, seed=3, tol=0.0).measure(
            context(h, c, w, lr=0.1)).scalars
        assert out["sharpness/iters"] == k
        estimates.append(out["sharpness/top_eig"])
    assert all(e <= 10.0 * (1 + 1e-12) for e in estimates)
    assert all(b >= a - 1e-12 for a, b in zip(estimates, estimates[1:], strict=False))
    for tol in (1e-1, 1e-2, 1e-3):
        want = next((k for k in range(2, DIM + 1)
                     if abs(estimates[k - 1] - estimates[k - 2]) <= tol * abs(estimates[k - 1])),
                    DIM)
        out = SharpnessProbe(every=1, max_iters=100, seed=3, tol=tol).measure(
            context(h, c, w, lr=0.1)).scalars
        assert out["sharpness/iters"] == want
        assert out["sharpness/top_eig"] == estimates[want - 1]


def test_sharpness_near_degenerate_top_pair():
    """lambda_1 and lambda_2 within 1e-5 of each other: any vector of their plane has a Rayleigh
    quotient within 1e-5 of the top, so the tolerance is met without separating them and the
    answer is right to well within tol."""
    out = sharpness([5.0, 5.0 - 5e-5, 1.0, 0.5, -0.5, -4.9], tol=1e-3)
    assert out["sharpness/top_eig"] == pytest.approx(5.0, rel=1e-3)
    assert out["sharpness/top_eig"] <= 5.0 * (1 + 1e-12)
    assert 2 <= out["sharpness/iters"] <= DIM


def test_sharpness_iterations_are_capped():
    out = sharpness(EIGS, max_iters=3, tol=0.0)
    assert out["sharpness/iters"] == 3
    assert out["sharpness/top_eig"] <= 10.0 * (1 + 1e-12)
    assert sharpness(EIGS, max_iters=1, tol=0.0)["sharpness/iters"] == 1


def test_sharpness_of_a_flat_loss_is_zero_after_one_step():
    out = sharpness([0.0] * DIM)
    assert out["sharpness/top_eig"] == 0.0
    assert out["sharpness/iters"] == 1


def test_ics_on_two_blocks_is_exact():
    h, c, w = make_problem(EIGS)
    lr = 0.05
    ctx = context(h, c, w, lr)
    probe = IcsProbe(every=1, layers=[1, 2], weight_names=["w1", "w2"],
                     layer_of={"w1": 1, "w2": 2})
    out = probe.measure(ctx)
    g = h @ (w - c)
    k = DIM // 2
    g2 = g[k:]
    g2_new = g2 - lr * h[k:, :k] @ g[:k]
    assert out.scalars["ics/L2/l2"] == pytest.approx(float((lr * h[k:, :k] @ g[:k]).norm()),
                                                     rel=1e-12)
    assert out.scalars["ics/L2/cos"] == pytest.approx(
        float(g2 @ g2_new / (g2.norm() * g2_new.norm())), rel=1e-12)
    # Layer 1 has no earlier layers: nothing moves (up to autograd-vs-closed-form rounding).
    assert out.scalars["ics/L1/l2"] == pytest.approx(0.0, abs=1e-12)
    assert out.scalars["ics/L1/cos"] == pytest.approx(1.0, abs=1e-15)


def test_grad_norm_and_distance():
    h, c, w = make_problem(EIGS)
    ctx = context(h, c, w, lr=0.1)
    g = h @ (w - c)
    assert GradNormProbe(1).measure(ctx).scalars["grad/norm"] == pytest.approx(float(g.norm()))
    init = {"w1": torch.zeros(DIM // 2, dtype=torch.float64),
            "w2": torch.ones(DIM - DIM // 2, dtype=torch.float64)}
    expected = math.sqrt(float((w[: DIM // 2] ** 2).sum() + ((w[DIM // 2 :] - 1) ** 2).sum()))
    assert DistanceProbe(1, init).measure(ctx).scalars["dist/init"] == pytest.approx(expected)


def test_probes_leave_the_inputs_untouched():
    h, c, w = make_problem(EIGS)
    ctx = context(h, c, w, lr=0.1)
    grads = {f"g.{k}": v for k, v in ctx.grads.items()}
    before = {n: t.clone() for n, t in {**ctx.params, **grads}.items()}
    for probe in (LandscapeProbe(1, [1.0, 2.0]), LandscapeProbe(1, [1.0, 2.0], batched=True),
                  SharpnessProbe(1, 5, 0),
                  IcsProbe(1, [2], ["w1", "w2"], {"w1": 1, "w2": 2})):
        probe.measure(ctx)
    after = {**ctx.params, **{f"g.{k}": v for k, v in ctx.grads.items()}}
    for n, t in before.items():
        assert torch.equal(t, after[n]), n
    assert ctx.optimizer.state_dict()["state"] == {}


@pytest.mark.parametrize("batched", [False, True], ids=["loop", "vmap"])
def test_zero_gradient_gives_nan_beta_not_a_crash(batched):
    h, c, _ = make_problem(EIGS)
    out = LandscapeProbe(1, [1.0], batched=batched).measure(context(h, c, c.clone(), lr=0.1))
    assert math.isnan(out.scalars["landscape/beta"])
    assert out.scalars["landscape/grad_dist_max"] == 0.0
