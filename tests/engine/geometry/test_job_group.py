"""The analysis job's group K (grid points per evaluation call): chosen once, from memory on a
GPU, carried with the directions to every chunk's worker; and the stacked write of a group."""

from __future__ import annotations

import types

import pytest
import torch

from tests.engine.geometry.test_job import STEPS, bits, job_for
from worker.engine.geometry import group_size as gs
from worker.engine.geometry.group_size import GROUP, MAX_GROUP, choose_group, group_size
from worker.engine.geometry.point_writer import PointWriter
from worker.engine.geometry.sink import MemoryAnalysisSink

MIB = 2**20


@pytest.mark.parametrize(("free", "per_point", "chunk", "want"), [
    (140 * 1024 * MIB, 130 * MIB, 64, MAX_GROUP),  # a VGG-16 on an H200: the cap
    (8 * 1024 * MIB, 130 * MIB, 64, 16),  # 0.5 * 8 GiB / 130 MiB = 31.5 -> 16
    (140 * 1024 * MIB, 1 * MIB, 48, 16),  # 16 is the largest power of two dividing 48
    (140 * 1024 * MIB, 1 * MIB, 7, 1),  # an odd chunk size: groups of one point
    (100 * MIB, 130 * MIB, 64, 1),  # not even one point fits: one (vmap may fall back)
])
def test_group_size_is_the_largest_power_of_two_memory_cap_and_chunk_allow(
        free, per_point, chunk, want):
    k = group_size(free, per_point, chunk)
    assert k == want
    assert chunk % k == 0 and k <= MAX_GROUP


def test_group_size_rejects_nonsense():
    with pytest.raises(ValueError):
        group_size(1, 0, 64)
    with pytest.raises(ValueError):
        group_size(1, 1, 0)


def _fake_cuda_evaluator(need: int):
    # A GPU cannot run here: an object with what choose_group reads of a CUDA evaluator.
    return types.SimpleNamespace(vmap=True, device=torch.device("cuda"), point_bytes=lambda: need)


def test_choose_group_asks_the_device_only_for_a_vmapped_grid_on_a_gpu(runs, monkeypatch):
    monkeypatch.setattr(gs.torch.cuda, "mem_get_info", lambda dev: (8 * 1024 * MIB, 0))
    big, small = _fake_cuda_evaluator(130 * MIB), _fake_cuda_evaluator(10 * MIB)
    assert choose_group([small, big], 441, 64) == 16  # the larger need decides
    assert choose_group([small], 441, 64) == MAX_GROUP
    assert choose_group([big], 1, 64) == GROUP  # one point: nothing to batch
    job = job_for(runs)
    job.prepare(STEPS, MemoryAnalysisSink())  # the CPU: the loop, GROUP
    assert job.group == GROUP


def test_the_group_is_recorded_and_travels_with_the_directions(runs):
    a, sink = job_for(runs), MemoryAnalysisSink()
    a.group = 4  # as a GPU worker's prepare would have chosen
    a.prepare(STEPS, sink)
    assert sink.named[STEPS]["evaluation"] == {"group": 4, "vmap": False}
    n = a.grid_points()
    a.run_chunk(STEPS, range(n), sink)
    state = a.directions_state(STEPS)
    assert state["group"] == 4
    b, cut = job_for(runs), MemoryAnalysisSink()
    prep = b.load_directions(state)
    assert b.group == 4 and prep.evaluator.group == 4
    for rng in (range(0, 3), range(3, 10), range(10, n)):
        b.run_chunk(STEPS, rng, cut)
    assert bits(cut.losses(STEPS)) == bits(sink.losses(STEPS))
    old = {k: v for k, v in state.items() if k != "group"}  # saved before K was per device
    c = job_for(runs)
    c.load_directions(old)
    assert c.group == GROUP


def test_point_bytes_is_a_cuda_measurement(runs):
    job = job_for(runs)
    prep = job.prepare(STEPS, MemoryAnalysisSink())
    with pytest.raises(RuntimeError, match="CUDA"):
        prep.evaluator.point_bytes()


def test_the_stacked_write_is_the_per_point_write(runs):
    g = torch.Generator().manual_seed(0)
    theta = [torch.randn(3, 4, generator=g, dtype=torch.float64),
             torch.randn(5, generator=g, dtype=torch.float64)]
    dirs = [[torch.randn_like(t) for t in theta] for _ in range(2)]
    coords = [(0.0, 0.0), (0.5, -1.0), (-0.25, 0.75), (1.0, 1.0)]
    w = PointWriter(theta, dirs)
    stacked = [torch.empty(len(coords), *t.shape, dtype=t.dtype) for t in theta]
    w.write_stacked(stacked, coords)
    for j, c in enumerate(coords):
        one = [torch.empty_like(t) for t in theta]
        w.write(one, c)
        for s, o, th, d1, d2 in zip(stacked, one, theta, *dirs, strict=True):
            torch.testing.assert_close(s[j], o, rtol=1e-15, atol=1e-15)
            torch.testing.assert_close(s[j], th + c[1] * d2 + c[0] * d1, rtol=1e-15, atol=1e-15)
    assert all(torch.equal(s[0], t) for s, t in zip(stacked, theta, strict=True))  # 0 d = 0
    with pytest.raises(ValueError):
        w.write_stacked(stacked, [(1.0,)])
    bare = [torch.empty(2, *t.shape, dtype=t.dtype) for t in theta]
    PointWriter(theta, []).write_stacked(bare, [(), ()])
    assert all(torch.equal(b[1], t) for b, t in zip(bare, theta, strict=True))
