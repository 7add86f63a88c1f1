"""How GridEvaluator groups, cuts and writes points without changing a value: vmap batches
equal the per-point loop, a surface cut into chunks equals one call bit for bit, batched and loop
groups are aligned to the grid whatever the cut, the loop's group buffer gives the stacked values
and is reused, and points are written through one flat parameter buffer (per tensor where the
parameters cannot share one)."""

from __future__ import annotations

import pytest
import torch

from server.analysis_spec import chunks
from tests.engine.geometry.evaluator_cases import _bn_mlp, _brute, _grid, _point, _theta
from worker.engine.geometry.directions import random_direction
from worker.engine.geometry.evaluate import GridEvaluator


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
