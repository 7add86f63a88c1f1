"""GridEvaluator's values against closed forms (a quadratic: slices, surfaces, its gradient
and Hessian) and brute-force copies (the BatchNorm modes, the default recalibration set, noisy
BatchNorm's seeded noise), the net, its generators and the global RNG left bit-identical, the
seeded evaluation subset, and the cross-entropy sum against torch."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.engine.geometry.evaluator_cases import _bn_mlp, _brute, _grid, _point, _theta
from worker.engine.geometry.directions import orthogonalize, random_direction
from worker.engine.geometry.evaluate import GridEvaluator, _loss_sum, eval_subset
from worker.engine.geometry.flat import flatten, unflatten
from worker.engine.norms import NoiseInjection
from worker.engine.state import derive_seed

# -- a quadratic: L(W) = mean_j ||W x_j - y_j||^2 with y_j = W* x_j -------------------------------
# = 1/2 (w - w*)^T H (w - w*) with H = kron(I_out, 2/N X^T X) (w = W flattened row-major).
N_Q, D_IN, D_OUT = 12, 5, 3


def _quadratic():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_Q, D_IN, generator=g, dtype=torch.float64)
    w_star = torch.randn(D_OUT, D_IN, generator=g, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(D_IN, D_OUT, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(D_OUT, D_IN, generator=g, dtype=torch.float64))
    hess = torch.kron(torch.eye(D_OUT, dtype=torch.float64), 2.0 / N_Q * x.T @ x)
    return net, x, x @ w_star.T, w_star.reshape(-1), hess


@pytest.mark.parametrize("k", [1, 4])
def test_slice_and_surface_equal_the_closed_form(k):
    net, x, y, w_star, hess = _quadratic()
    theta = _theta(net)
    d1 = random_direction(theta, 1, "d1")
    d2 = orthogonalize(random_direction(theta, 1, "d2"), d1)
    # batch 5 of 12 samples: uneven batches, so the mean must weight them by size
    ev = GridEvaluator(net, "sum_squares", x, y, bn_mode="batch", batch_size=5, classify=False,
                       max_batched_points=k, use_vmap=True)

    def closed(c, dirs):
        w = flatten(theta) + sum(ci * flatten(d) for ci, d in zip(c, dirs, strict=True))
        e = w - w_star
        return float(0.5 * e @ hess @ e)

    xs = [-1.0 + 0.25 * i for i in range(9)]
    ys = [-2.0, -0.5, 0.0, 0.75, 1.5]
    for dirs, coords in (([d1], [(a,) for a in xs]), ([d1, d2], _grid(xs, ys)), ([], [()])):
        got = ev.evaluate(theta, dirs, coords)
        assert len(got) == len(coords)
        for c, v in zip(coords, got, strict=True):
            want = closed(c, dirs)
            assert abs(v.loss - want) <= 1e-10 * abs(want), (c, v.loss, want)
            assert v.acc is None
    assert ev.fallback is None


def test_gradient_and_hessian_of_the_differentiable_loss_are_the_closed_form():
    net, x, y, w_star, hess = _quadratic()
    theta = _theta(net)
    ev = GridEvaluator(net, "sum_squares", x, y, bn_mode="running", batch_size=5, classify=False)
    e = flatten(theta) - w_star
    torch.testing.assert_close(flatten(ev.gradient(theta)), hess @ e, rtol=1e-10, atol=1e-12)
    loss = ev.loss_fn_of_params(theta)
    torch.testing.assert_close(loss(theta), 0.5 * e @ hess @ e, rtol=1e-12, atol=0)
    h = torch.autograd.functional.hessian(lambda w: loss(unflatten(w, theta)), flatten(theta))
    torch.testing.assert_close(h, hess, rtol=1e-10, atol=1e-12)


# -- BatchNorm modes on a small MLP ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["batch", "running", "recalibrated"])
def test_bn_modes_equal_brute_force_copies(mode):
    net, x, y, recal = _bn_mlp()
    theta = _theta(net)
    dirs = [random_direction(theta, 4, "d1"), random_direction(theta, 4, "d2")]
    coords = [(0.0, 0.0), (0.5, -0.25), (-1.0, 1.0)]
    ev = GridEvaluator(net, "cross_entropy", x, y, bn_mode=mode, batch_size=8, classify=True,
                       recal_x=recal)
    got = ev.evaluate(theta, dirs, coords)
    for c, v in zip(coords, got, strict=True):
        loss, acc = _brute(net, _point(theta, dirs, c), x, y, 8, mode, recal)
        assert v.loss == pytest.approx(loss, rel=1e-12), c
        assert v.acc == acc
    # The three modes measure different things (so the comparison above can tell them apart).
    others = {m: _brute(net, theta, x, y, 8, m, recal)[0]
              for m in ("batch", "running", "recalibrated") if m != mode}
    for m, other in others.items():
        assert got[0].loss != pytest.approx(other, rel=1e-6), m


@pytest.mark.parametrize("mode", ["batch", "running", "recalibrated"])
def test_differentiable_loss_and_gradient_equal_a_brute_force_copy(mode):
    net, x, y, recal = _bn_mlp()
    theta = _theta(net)
    ev = GridEvaluator(net, "cross_entropy", x, y, bn_mode=mode, batch_size=8, classify=True,
                       recal_x=recal)
    loss = ev.loss_fn_of_params(theta)
    grad = ev.gradient(theta)
    # Evaluating elsewhere recalibrates the evaluator's copy at other points: the closure keeps
    # the statistics of theta.
    ev.evaluate(theta, [random_direction(theta, 1)], [(1.0,), (-1.0,)])
    c = copy.deepcopy(net)
    if mode == "recalibrated":
        for m in c.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.reset_running_stats()
                m.momentum = None
        c.train()
        with torch.no_grad():
            for xb in recal.split(8):
                c(xb)
    c.train(mode == "batch")
    total = sum(F.cross_entropy(c(xb), yb, reduction="sum")
                for xb, yb in zip(x.split(8), y.split(8), strict=True)) / len(x)
    total.backward()
    assert float(loss(theta)) == pytest.approx(float(total.detach()), rel=1e-12)
    for n, p in c.named_parameters():
        torch.testing.assert_close(grad[n], p.grad, rtol=1e-10, atol=1e-14)


def test_recalibration_set_defaults_to_the_evaluation_set():
    net, x, y, _ = _bn_mlp()
    theta = _theta(net)
    ev = GridEvaluator(net, "cross_entropy", x, y, bn_mode="recalibrated", batch_size=8,
                       classify=True)
    (v,) = ev.evaluate(theta, [], [()])
    assert v.loss == pytest.approx(_brute(net, theta, x, y, 8, "recalibrated", x)[0], rel=1e-12)


def test_evaluator_leaves_net_buffers_generators_and_global_rng_bit_identical():
    net, x, y, recal = _bn_mlp("noisy_batch")
    before = copy.deepcopy(net.state_dict())
    noise_state = net.noise_generator.get_state()
    rng = torch.get_rng_state()
    net.train()
    theta = _theta(net)
    dirs = [random_direction(theta, 2)]
    for mode in ("batch", "running", "recalibrated"):
        ev = GridEvaluator(net, "cross_entropy", x, y, bn_mode=mode, batch_size=8, classify=True,
                           recal_x=recal, max_batched_points=2, use_vmap=True)
        ev.evaluate(theta, dirs, [(0.3,), (-0.2,), (0.1,)])
        ev.gradient(theta)
        ev.loss_fn_of_params(theta)(theta)
    after = net.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert torch.equal(net.noise_generator.get_state(), noise_state)
    assert torch.equal(torch.get_rng_state(), rng)
    assert net.training


def test_noisy_batchnorm_gives_the_same_value_for_the_same_point():
    net, x, y, _ = _bn_mlp("noisy_batch")
    theta = _theta(net)
    dirs = [random_direction(theta, 2)]
    ev = GridEvaluator(net, "cross_entropy", x, y, bn_mode="batch", batch_size=8, classify=True,
                       max_batched_points=1)
    a = ev.evaluate(theta, dirs, [(0.5,), (0.0,), (0.5,)])
    assert a[0] == a[2]
    assert ev.evaluate(theta, dirs, [(0.5,)])[0] == a[0]
    # The noise is that of a copy whose generator is seeded as documented (bn_modes.py), it
    # depends on the seed, and it is there (the value is not the noise-free one).
    noisy = copy.deepcopy(net)
    noisy.noise_generator.manual_seed(derive_seed(0, "analysis-noise", 0))
    at = _point(theta, dirs, (0.5,))
    assert a[0].loss == pytest.approx(_brute(noisy, at, x, y, 8, "batch")[0], rel=1e-12)
    other = GridEvaluator(net, "cross_entropy", x, y, bn_mode="batch", batch_size=8,
                          classify=True, max_batched_points=1, noise_seed=1)
    assert other.evaluate(theta, dirs, [(0.5,)])[0].loss != a[0].loss
    quiet = copy.deepcopy(net)
    for m in quiet.modules():
        if isinstance(m, NoiseInjection):
            m.forward = lambda a: a  # the noise-free network
    assert a[0].loss != pytest.approx(_brute(quiet, at, x, y, 8, "batch")[0], rel=1e-6)
    # The differentiable loss sees the same noise at every call.
    loss = ev.loss_fn_of_params(theta)
    assert torch.equal(loss(theta), loss(theta))
    assert float(loss(theta)) == pytest.approx(a[1].loss, rel=1e-12)


# -- the evaluation subset and the loss sum --------------------------------------------------------


def test_eval_subset_is_seeded_distinct_and_bounded():
    a, b = eval_subset(100, 30, seed=5), eval_subset(100, 30, seed=5)
    assert a.dtype == torch.int64 and len(a) == 30 and torch.equal(a, b)
    assert len(set(a.tolist())) == 30 and int(a.min()) >= 0 and int(a.max()) < 100
    assert not torch.equal(a, eval_subset(100, 30, seed=6))
    assert torch.equal(eval_subset(100, 10, seed=5), a[:10])  # a prefix of the same permutation
    everything = eval_subset(100, None, seed=5)
    assert sorted(everything.tolist()) == list(range(100))
    assert len(eval_subset(10, 2048, seed=0)) == 10


def test_cross_entropy_sum_equals_torch_on_ties_overflow_and_leading_dims():
    """The evaluator's shifted log-sum-exp and max-index hits against F.cross_entropy and
    argmax: on random logits with a leading (points) dim, on all-equal logits (the first index
    wins a tie, as argmax), and on overflowed logits (an infinite loss, not NaN)."""
    loss_sum = _loss_sum("cross_entropy")
    g = torch.Generator().manual_seed(3)
    out = torch.randn(3, 50, 10, generator=g, dtype=torch.float64) * 20
    y = torch.randint(0, 10, (50,), generator=g)
    loss, hits = loss_sum(out, y, True)
    for j in range(3):
        assert float(loss[j]) == pytest.approx(
            float(F.cross_entropy(out[j], y, reduction="sum")), rel=1e-12)
        assert int(hits[j]) == int((out[j].argmax(-1) == y).sum())
    flat = torch.zeros(4, 10)  # a dead net: every logit equal
    loss, hits = loss_sum(flat, torch.tensor([0, 3, 0, 9]), True)
    assert float(loss) == pytest.approx(4 * math.log(10), rel=1e-6) and int(hits) == 2
    big = torch.tensor([[float("inf"), 1.0, 2.0], [0.0, 1.0, 2.0]])
    loss, _ = loss_sum(big, torch.tensor([1, 2]), True)
    assert float(loss) == float("inf")
    low = torch.full((1, 3), float("-inf"))  # every logit -inf: NaN, as F.cross_entropy gives
    assert math.isnan(float(loss_sum(low, torch.tensor([0]), False)[0]))
    assert torch.isnan(F.cross_entropy(low, torch.tensor([0]), reduction="sum"))
