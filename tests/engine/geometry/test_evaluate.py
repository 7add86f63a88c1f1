"""GridEvaluator against closed forms (a quadratic) and brute-force copies (BatchNorm modes)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from server.analysis_spec import chunks
from server.spec import RunSpec
from worker.engine.geometry.directions import orthogonalize, random_direction
from worker.engine.geometry.evaluate import GridEvaluator, _loss_sum, eval_subset
from worker.engine.geometry.flat import flatten, unflatten
from worker.engine.models import build_model
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


def _theta(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def _grid(xs, ys):
    return [(a, b) for b in ys for a in xs]  # flat index iy * nx + ix


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


def _bn_mlp(norm: str = "batch", dtype=torch.float64, seed: int = 0):
    spec = RunSpec(model="mlp", depth=3, width=8, norm=norm, seed=seed)
    net = build_model(spec, (6,), 3, torch.Generator().manual_seed(9)).to(dtype)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # running statistics away from their (0, 1) start
        net.train()
        for _ in range(3):
            net(2.0 + 3.0 * torch.randn(16, 6, generator=g, dtype=dtype))
    x = torch.randn(20, 6, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (20,), generator=g)
    recal = 0.5 + torch.randn(16, 6, generator=g, dtype=dtype)
    return net, x, y, recal


def _point(theta, dirs, c):
    return {n: t + sum(ci * d[n] for ci, d in zip(c, dirs, strict=True)) for n, t in theta.items()}


def _brute(net, params, x, y, bs, mode, recal=None):
    """The value a plain copy gives: train mode (batch), eval mode (running), or eval mode after
    recomputing its running statistics on `recal` (momentum None, train-mode forwards)."""
    c = copy.deepcopy(net)
    with torch.no_grad():
        for n, p in c.named_parameters():
            p.copy_(params[n])
        if mode == "recalibrated":
            for m in c.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.reset_running_stats()
                    m.momentum = None
            c.train()
            for xb in recal.split(bs):
                c(xb)
        c.train(mode == "batch")
        total, hits = 0.0, 0
        for xb, yb in zip(x.split(bs), y.split(bs), strict=True):
            out = c(xb)
            total += float(F.cross_entropy(out, yb, reduction="sum"))
            hits += int((out.argmax(1) == yb).sum())
    return total / len(x), hits / len(x)


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


@pytest.mark.parametrize("norm,mode", [("batch", "batch"), ("batch", "running"),
                                       ("noisy_batch", "batch"), ("none", "batch")])
def test_vmap_batches_equal_the_per_point_loop(norm, mode):
    # float64: the batched kernels sum in another order than the loop's, which moves the
    # result by a few ulps of float64 (~1e-16 relative per operation); 1e-12 leaves room for
    # the few hundred operations on a path while still catching any real difference.
    net, x, y, _ = _bn_mlp(norm)
    theta = _theta(net)
    dirs = [random_direction(theta, 3, "d1"), random_direction(theta, 3, "d2")]
    coords = _grid([-1.0, -0.3, 0.4, 1.0], [-0.5, 0.0, 0.5])
    batched = GridEvaluator(net, "cross_entropy", x, y, bn_mode=mode, batch_size=8,
                            classify=True, max_batched_points=5, use_vmap=True)
    loop = GridEvaluator(net, "cross_entropy", x, y, bn_mode=mode, batch_size=8, classify=True,
                         max_batched_points=1)
    a, b = batched.evaluate(theta, dirs, coords), loop.evaluate(theta, dirs, coords)
    assert batched.fallback is None
    for va, vb in zip(a, b, strict=True):
        assert va.loss == pytest.approx(vb.loss, rel=1e-12, abs=0)
        assert va.acc == vb.acc


@pytest.mark.parametrize("mode", ["batch", "recalibrated"])
def test_a_surface_cut_into_chunks_equals_one_call_bit_for_bit(mode):
    net, x, y, recal = _bn_mlp("batch", torch.float32)
    theta = _theta(net)
    dirs = [random_direction(theta, 3, "d1"), random_direction(theta, 3, "d2")]
    grid = _grid([-1.0 + 0.5 * i for i in range(5)], [-1.0 + 0.5 * i for i in range(5)])

    def make():
        return GridEvaluator(net, "cross_entropy", x, y, bn_mode=mode, batch_size=8,
                             classify=True, recal_x=recal, max_batched_points=4, use_vmap=True)

    whole = make().evaluate_range(theta, dirs, grid, range(len(grid)))
    assert len(whole) == len(grid)
    for per in (1, 3, 7, 10):
        ev = make()  # a worker of its own per cut, as chunk tasks are
        parts = [v for r in chunks(len(grid), per) for v in ev.evaluate_range(theta, dirs, grid, r)]
        assert parts == whole, per
    # and the evaluated values are those of the points asked for, not of their neighbours
    single = make().evaluate_range(theta, dirs, grid, range(13, 14))
    assert single == whole[13:14]
    assert whole[13] != whole[12]


class _RecordingEvaluator(GridEvaluator):
    """Records the composition of every batched group (the unit that must not depend on cuts)."""

    groups: list[tuple]

    def _group_vmap(self, writer, group, k):
        self.groups.append(tuple(map(tuple, group)))
        return super()._group_vmap(writer, group, k)


def test_batched_groups_are_aligned_to_the_grid_whatever_the_cut():
    # Bitwise equality above could hold by luck on a CPU whose kernels do not depend on the
    # other rows of a stacked matmul; the groups themselves must be the grid's, on any device.
    net, x, y, _ = _bn_mlp("batch", torch.float32)
    theta = _theta(net)
    dirs = [random_direction(theta, 3)]
    grid = [(0.1 * i,) for i in range(23)]
    aligned = {tuple(grid[i : i + 4]) for i in range(0, 23, 4)}
    for per in (1, 3, 5, 23):
        ev = _RecordingEvaluator(net, "cross_entropy", x, y, bn_mode="running", batch_size=8,
                                 classify=True, max_batched_points=4, use_vmap=True)
        ev.groups = []
        for r in chunks(len(grid), per):
            ev.evaluate_range(theta, dirs, grid, r)
        assert set(ev.groups) == aligned, per
    # On the CPU the default is the per-point loop (vmap costs more there: bench_surface.py).
    ev = _RecordingEvaluator(net, "cross_entropy", x, y, bn_mode="running", batch_size=8,
                             classify=True)
    ev.groups = []
    ev.evaluate(theta, dirs, grid)
    assert ev.groups == [] and not ev.vmap


class _RecordingLoop(GridEvaluator):
    """Records the points of every loss reduction of the loop."""

    groups: list[tuple]

    def _group_loop(self, target, writer, group):
        self.groups.append(tuple(map(tuple, group)))
        return super()._group_loop(target, writer, group)


@pytest.mark.parametrize("mode", ["batch", "recalibrated"])
def test_the_loops_loss_groups_are_aligned_and_change_no_value(mode):
    # The loop sums K points' losses in one call; a value must not depend on the group it was
    # summed in (compared with groups of one point) nor on how the grid is cut into chunks.
    net, x, y, recal = _bn_mlp("batch", torch.float32)
    theta = _theta(net)
    dirs = [random_direction(theta, 3)]
    grid = [(0.1 * i,) for i in range(23)]

    def make(k: int) -> _RecordingLoop:
        ev = _RecordingLoop(net, "cross_entropy", x, y, bn_mode=mode, batch_size=8,
                            classify=True, recal_x=recal, max_batched_points=k,
                            use_vmap=False)
        ev.groups = []
        return ev

    ones, whole = make(1).evaluate(theta, dirs, grid), make(4).evaluate(theta, dirs, grid)
    for a, b in zip(ones, whole, strict=True):  # float64 sums of the same float32 outputs
        assert a.loss == pytest.approx(b.loss, rel=1e-12, abs=0) and a.acc == b.acc
    for per in (1, 3, 5, 23):
        ev = make(4)
        got = [v for r in chunks(len(grid), per) for v in ev.evaluate_range(theta, dirs, grid, r)]
        assert got == whole, per  # bit for bit: the same groups whatever the cut
        assert set(ev.groups) == {tuple(grid[i : i + 4]) for i in range(0, 23, 4)}, per


class _StackingLoop(GridEvaluator):
    """The loop as it was before the group buffer: each point's batch outputs concatenated,
    kept, and stacked at the group's end."""

    def _group_loop(self, target, writer, group):
        outs = []
        with torch.no_grad():
            for c in group:
                writer.write(target, c)
                self.copy.rewind()
                outs.append(torch.cat([self.module(xb) for xb, _ in self.batches]))
            loss, hits = self.loss_sum(torch.stack(outs), self.y, self.classify)
        return self._values(loss, hits, len(group))


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_the_loops_group_buffer_gives_the_stacked_values_bit_for_bit_and_is_reused(norm):
    # The loop copies each batch's output into one reused (K, n, C) buffer and frees it at once
    # (evaluate._group_loop): the same values, bit for bit, as stacking the outputs, with
    # several evaluation batches per point and a short last group.
    net, x, y, _ = _bn_mlp(norm, torch.float32)
    theta = _theta(net)
    dirs = [random_direction(theta, 3), random_direction(theta, 4)]
    grid = [(0.3 * i - 0.6, 0.2 * j) for j in range(3) for i in range(5)]  # 15 = 4 + 4 + 4 + 3
    kw = dict(bn_mode="batch", batch_size=8, classify=True, max_batched_points=4, use_vmap=False)
    ev = GridEvaluator(net, "cross_entropy", x, y, **kw)
    got = ev.evaluate(theta, dirs, grid)
    assert got == _StackingLoop(net, "cross_entropy", x, y, **kw).evaluate(theta, dirs, grid)
    buf = ev._out_buffer
    assert buf is not None and tuple(buf.shape) == (4, len(x), 3)
    assert ev.evaluate(theta, dirs, grid) == got and ev._out_buffer is buf  # reused


def test_eval_subset_is_seeded_distinct_and_bounded():
    a, b = eval_subset(100, 30, seed=5), eval_subset(100, 30, seed=5)
    assert a.dtype == torch.int64 and len(a) == 30 and torch.equal(a, b)
    assert len(set(a.tolist())) == 30 and int(a.min()) >= 0 and int(a.max()) < 100
    assert not torch.equal(a, eval_subset(100, 30, seed=6))
    assert torch.equal(eval_subset(100, 10, seed=5), a[:10])  # a prefix of the same permutation
    everything = eval_subset(100, None, seed=5)
    assert sorted(everything.tolist()) == list(range(100))
    assert len(eval_subset(10, 2048, seed=0)) == 10


@pytest.mark.parametrize("mode", ["batch", "running", "recalibrated"])
def test_points_written_into_the_flat_buffer_equal_per_tensor_writes_bit_for_bit(mode):
    """The loop writes a point into one flat buffer that every parameter of the copy views
    (bn_modes._flatten); the values are those of writing each parameter tensor, bit for bit."""
    net, x, y, recal = _bn_mlp()
    theta = _theta(net)
    dirs = [random_direction(theta, 4, "d1"), random_direction(theta, 4, "d2")]
    coords = [(0.0, 0.0), (0.5, -0.25), (-1.0, 1.0), (0.3, 0.7)]

    def evaluator():
        return GridEvaluator(net, "cross_entropy", x, y, bn_mode=mode, batch_size=8,
                             classify=True, recal_x=recal)

    flat = evaluator()
    assert flat.copy.flat is not None
    params = list(flat.copy.params.values())
    assert all(p.untyped_storage().data_ptr() == flat.copy.flat.untyped_storage().data_ptr()
               for p in params)
    per_tensor = evaluator()
    per_tensor.copy.flat = None  # the per-tensor writes
    assert flat.evaluate(theta, dirs, coords) == per_tensor.evaluate(theta, dirs, coords)


def test_parameters_that_cannot_share_a_buffer_keep_per_tensor_writes():
    net, x, y, _recal = _bn_mlp()
    w = next(p for p in net.parameters() if p.dim() == 2)
    w.data = w.data.t().contiguous().t()  # the same values, transposed in memory
    assert not w.is_contiguous()
    theta = _theta(net)
    dirs = [random_direction(theta, 4, "d1")]
    ev = GridEvaluator(net, "cross_entropy", x, y, bn_mode="batch", batch_size=8, classify=True)
    assert ev.copy.flat is None
    got = ev.evaluate(theta, dirs, [(0.5,)])[0]
    want, _ = _brute(net, _point(theta, dirs, (0.5,)), x, y, 8, "batch")
    assert got.loss == pytest.approx(want, rel=1e-12)


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
