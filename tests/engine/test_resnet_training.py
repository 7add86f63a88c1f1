"""ResNets in the engine: every probe runs on them and changes nothing of training (the
landscape probe by the loop and vmap-batched), and the analyses evaluate them correctly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from server.analysis_spec import AnalysisSpec
from server.spec import RunSpec
from tests.engine.test_trainer import ALL_PROBES, NO_PROBES, bits, state_of
from worker.engine.geometry.directions import orthogonalize, random_direction
from worker.engine.geometry.job import AnalysisJob
from worker.engine.geometry.sink import MemoryAnalysisSink
from worker.engine.models import build_model
from worker.engine.sink import MemorySink
from worker.engine.snapshots import DirectorySnapshotStore
from worker.engine.trainer import Trainer

# ICS on a stage-1 conv and on the first stride-2 conv, whose shortcut pads channels.
PROBES = {**ALL_PROBES, "ics": {"every": 3, "layers": [3, 8]}}


def spec(**over) -> RunSpec:
    return RunSpec.model_validate({
        "model": "resnet", "resnet_depth": 20, "dataset": "digits", "lr": 0.05,
        "batch_size": 16, "steps": 5, "seed": 3, "device": "cpu", "eval_every": 2,
        "norm_groups": 4, **over})


@pytest.mark.parametrize("norm,skip", [("batch", True), ("none", True), ("none", False),
                                       ("noisy_batch", False), ("l2", True), ("group", False)])
def test_all_probes_run_and_leave_the_trajectory_bit_identical(tmp_path, norm, skip):
    batched = {**PROBES, "landscape": {**PROBES["landscape"], "batched": True}}
    runs = {}
    for name, probes in (("on", PROBES), ("on-batched", batched), ("off", NO_PROBES)):
        t = Trainer(spec(norm=norm, skip=skip, probes=probes), tmp_path)
        sink = MemorySink()
        assert t.run(sink).status == "succeeded"
        runs[name] = (t, sink)
    t_off, off = runs["off"]
    for name in ("on", "on-batched"):
        t_on, on = runs[name]
        assert bits(on.values("train/loss")) == bits(off.values("train/loss")), name
        assert bits(on.values("test/loss")) == bits(off.values("test/loss")), name
        s_on, s_off = state_of(t_on), state_of(t_off)
        assert all(torch.equal(s_on[k], s_off[k]) for k in s_off), name
        assert t_on.optimizer.state_dict() == t_off.optimizer.state_dict(), name
        # Every probe measured, finite where it must be.
        for key in ("landscape/beta", "ics/L3/l2", "ics/L8/cos", "sharpness/top_eig",
                    "grad/norm", "dist/init", "act/L19/var", "act/L1/unit_mean"):
            assert key in on.series, (name, key)
        assert all(math.isfinite(v) for v in on.values("ics/L8/l2"))
        assert all(math.isfinite(v) for v in on.values("sharpness/top_eig"))
        layers = {d.layer for ds in on.dists.values() for d in ds}
        assert layers == set(range(1, 20))  # one histogram per norm slot
    # the batched run measured with vmap at every probed step (no fallback to the loop)
    assert set(runs["on-batched"][1].values("probe_path/landscape_batched")) == {1.0}
    for a, b in zip(runs["on"][1].values("landscape/loss_max"),
                    runs["on-batched"][1].values("landscape/loss_max"), strict=True):
        assert a == pytest.approx(b, rel=1e-4)


def test_ics_of_the_first_layer_is_zero_and_of_later_layers_is_not(tmp_path):
    """Layer 1 has no earlier layer: G' = G exactly. A stage-2 conv sees the updated
    layers before it through both the branch and the (padded) shortcut."""
    t = Trainer(spec(norm="batch", probes={**NO_PROBES, "ics": {"every": 1,
                                                                 "layers": [1, 8]}}), tmp_path)
    sink = MemorySink()
    t.run(sink)
    assert set(sink.values("ics/L1/l2")) == {0.0}
    assert all(v > 0 for v in sink.values("ics/L8/l2"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("resnet-runs")
    out = {}
    for skip in (True, False):
        s = spec(norm="batch", skip=skip, steps=4, probes=NO_PROBES, eval_every=0)
        store = DirectorySnapshotStore(root / f"skip-{skip}")
        Trainer(s, root).run(MemorySink(), snapshots=store)
        out[skip] = (s, store, root)
    return out


@pytest.mark.parametrize("skip", [True, False])
def test_a_surface_on_a_resnet_is_theta_plus_a_d1_plus_b_d2(trained, skip):
    run, store, data = trained[skip]
    a_spec = AnalysisSpec.model_validate({
        "kind": "surface", "x": {"points": 3}, "y": {"points": 3}, "eval_samples": 64,
        "batch_size": 32, "bn_mode": "batch", "directions": {"kind": "random", "seed": 7}})
    job = AnalysisJob(run, a_spec, data, store, "cpu")
    sink = MemoryAnalysisSink()
    assert job.run_all(sink)
    state = store.load(run.steps)["model"]
    theta = {n: state[n] for n in job.names}
    d1 = random_direction(theta, 7, "d1")
    d2 = orthogonalize(random_direction(theta, 7, "d2"), d1)
    xs, ys = a_spec.x_axis().values(), a_spec.y_axis().values()
    net = build_model(run, (1, 8, 8), 10, torch.Generator())
    net.load_state_dict(state)
    net.train()  # bn_mode batch: batch statistics
    for i in (0, 4, 8):
        iy, ix = divmod(i, 3)
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(theta[n] + xs[ix] * d1[n] + ys[iy] * d2[n])
            total = sum(float(F.cross_entropy(net(xb), yb, reduction="sum"))
                        for xb, yb in zip(job.x.split(32), job.y.split(32), strict=True))
        assert sink.grid[run.steps][i].loss == pytest.approx(total / len(job.x), rel=1e-5)


def test_skip_and_noshort_surfaces_share_their_directions(trained):
    """Same parameter names, same seed: the raw directions are identical, so the two nets
    are cut along the same random directions (filter-normalised to each net's weights)."""
    (run_a, store_a, _), (run_b, store_b, _) = trained[True], trained[False]
    ta = store_a.load(run_a.steps)["model"]
    tb = store_b.load(run_b.steps)["model"]
    names = [n for n, _ in build_model(run_a, (1, 8, 8), 10, torch.Generator())
             .named_parameters()]
    da = random_direction({n: ta[n] for n in names}, 0, "d1")
    db = random_direction({n: tb[n] for n in names}, 0, "d1")
    for n in names:
        if da[n].dim() > 1:  # filter by filter: the same Gaussian, rescaled
            ratio = (da[n].flatten(1).norm(dim=1) / db[n].flatten(1).norm(dim=1))
            scaled = db[n] * ratio.view(-1, *([1] * (db[n].dim() - 1)))
            torch.testing.assert_close(da[n], scaled, rtol=1e-5, atol=1e-7)


def test_a_spectrum_on_a_resnet_runs(trained):
    run, store, data = trained[True]
    a_spec = AnalysisSpec.model_validate({
        "kind": "spectrum", "eval_samples": 64, "batch_size": 32, "bn_mode": "batch",
        "spectrum": {"top_k": 2, "lanczos_steps": 6, "trace_probes": 2, "slq_steps": 4,
                     "slq_vectors": 1, "density_points": 16}})
    sink = MemoryAnalysisSink()
    assert AnalysisJob(run, a_spec, data, store, "cpu").run_all(sink)
    values = sink.named[run.steps]
    assert values  # top eigenvalues, trace, density: all computed on the ResNet
    flat = [v for v in _numbers(values)]
    assert flat and all(math.isfinite(v) for v in flat)


def _numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _numbers(v)
