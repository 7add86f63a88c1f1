"""The shortcuts the probes take to stay cheap, each against the plain computation it replaces.

- the shadow network evaluates exactly what the live one computes (l(0) is the training loss,
  bitwise, and so is its gradient), although in train mode it keeps no BatchNorm statistics;
- histograms by binary search in a sorted sample equal torch.histc's counts, value for value,
  even for values within a few ulps of a bin edge; quantiles of a sorted sample equal
  np.quantile's; the device ("torch") and CPU ("numpy") summaries agree;
- training accuracy computed for a window of steps equals the per-step computation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import worker.engine.trainer as trainer_module
from server.spec import NORMS, RunSpec
from tests.engine.probe_context import context_at
from tests.engine.small_nets import SMALL
from worker.engine.probes import ProbeContext
from worker.engine.probes.activations import (
    QUANTILES,
    ActivationsProbe,
    _HistcEdges,
    _sorted_quantiles,
)
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer


def spec(model: str, **over) -> RunSpec:
    return RunSpec.model_validate({**SMALL[model], "steps": 3, "seed": 5, "device": "cpu",
                                   "eval_every": 0, "norm_groups": 2, **over})


@pytest.mark.parametrize("model", list(SMALL))
@pytest.mark.parametrize("norm", NORMS)
def test_the_shadow_evaluates_the_training_loss_and_gradient_bitwise(tmp_path, model, norm):
    t = Trainer(spec(model, norm=norm), tmp_path)
    ctx, loss = context_at(t, 2)
    x, y = ctx.x, ctx.y
    buffers = {k: v.clone() for k, v in t.net.state_dict().items() if k not in t.params}
    l0, grads = ctx.loss_and_grad_along(0.0)
    assert l0.item() == loss.item() or (math.isnan(l0.item()) and math.isnan(loss.item()))
    for name, g in zip(ctx.names, grads, strict=True):
        assert torch.equal(g, t.params[name].grad), name
    full, full_grads = ctx.loss_and_grad(ctx.params)
    assert full == loss.item() or math.isnan(full)
    assert all(torch.equal(full_grads[n], g) for n, g in zip(ctx.names, grads, strict=True))
    # ... the live BatchNorm statistics were left alone by both passes
    live = t.net.state_dict()
    assert all(torch.equal(live[k], v) for k, v in buffers.items())
    # ... and in eval mode the shadow normalises with those running statistics
    ctx_eval = ProbeContext(
        step=2, net=t.net, params=ctx.params, grads=ctx.grads, x=x, y=y, loss_fn=t.loss_fn,
        lr=t.spec.lr, optimizer=t.optimizer, noise=t.noise, mode="eval",
    )
    t.net.eval()
    try:
        with torch.no_grad():
            expected = t.loss_fn(t.net(x), y).item()
    finally:
        t.net.train()
    got = ctx_eval.loss_at(ctx.params)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


def test_histogram_thresholds_equal_histc_near_every_edge():
    rng = np.random.default_rng(0)
    for lo, hi, bins, dtype in [(-6.0, 6.0, 64, np.float32), (-3.0, 3.0, 16, np.float32),
                                (-1.1, 2.7, 33, np.float32), (-6.0, 6.0, 64, np.float64),
                                (0.1, 0.3, 7, np.float64)]:
        edges = _HistcEdges(lo, hi, bins, dtype)
        near = []
        for start in [*edges.starts, edges.hi, dtype(0.0)]:
            x = start
            for _ in range(40):
                x = np.nextafter(x, dtype(-np.inf))
            for _ in range(80):
                near.append(x)
                x = np.nextafter(x, dtype(np.inf))
        values = np.concatenate([np.array(near, dtype),
                                 rng.uniform(lo - 1, hi + 1, 20_000).astype(dtype)])
        expected = torch.histc(torch.from_numpy(values), bins=bins, min=lo, max=hi)
        counts, under, over = edges.count_sorted(np.sort(values))
        assert counts == [int(c) for c in expected.tolist()], (lo, hi, bins, dtype)
        assert under == int((values < dtype(lo)).sum())
        assert over == int((values > dtype(hi)).sum())
        assert edges.count(values) == (counts, under, over)


def test_quantiles_of_a_sorted_sample_equal_numpys():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 7, 100, 101, 4096, 65536):
        for dtype in (np.float32, np.float64):
            a = np.sort(rng.standard_normal(n).astype(dtype))
            assert _sorted_quantiles(a) == np.quantile(a, QUANTILES).tolist(), (n, dtype)
    assert all(math.isnan(q) for q in _sorted_quantiles(np.zeros(0, np.float32)))


def probe(bins: int = 16, value_range=(-3.0, 3.0)) -> ActivationsProbe:
    return ActivationsProbe(1, [], [], 0, bins, value_range)


def test_cpu_and_device_summaries_agree_also_on_non_finite_values():
    g = torch.Generator().manual_seed(2)
    big = torch.randn(70_000, generator=g) * 2  # above the quantile sample: histc path
    bad = torch.randn(3000, generator=g)
    bad[::7] = math.nan
    bad[1::11] = math.inf
    bad[2::13] = -math.inf
    tensors = [torch.randn(128, 16, generator=g) * 3, torch.randn(40, generator=g).double(),
               big, bad, torch.full((5,), 3.0), torch.full((4,), math.nan)]
    p = probe()
    for a, b, t in zip(p.summarize(tensors, "numpy"), p.summarize(tensors, "torch"), tensors,
                       strict=True):
        for key in ("counts", "underflow", "overflow", "nonfinite", "lo", "hi"):
            assert a[key] == b[key], key
        assert sum(a["counts"]) + a["underflow"] + a["overflow"] + a["nonfinite"] == t.numel()
        for key in ("mean", "var"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6, nan_ok=True), key
        assert list(a["quantiles"]) == list(b["quantiles"])
        for q in a["quantiles"]:
            assert a["quantiles"][q] == pytest.approx(b["quantiles"][q], rel=1e-5, abs=1e-6,
                                                      nan_ok=True)
    nonfinite = p.summarize([bad], "numpy")[0]
    assert nonfinite["nonfinite"] == int((~torch.isfinite(bad)).sum())
    assert math.isnan(nonfinite["var"])
    finite = bad[torch.isfinite(bad)].numpy()
    assert nonfinite["quantiles"]["q50"] == pytest.approx(np.quantile(finite, 0.5), rel=1e-6)


def test_training_accuracy_in_windows_equals_the_per_step_value(tmp_path, monkeypatch):
    s = spec("mlp", steps=75, eval_every=10, checkpoint_every=0,
             probes={"landscape": {"every": 7, "multipliers": [1.0]}})
    sinks, default = {}, trainer_module.ACC_WINDOW
    for window in (1, default):
        monkeypatch.setattr(trainer_module, "ACC_WINDOW", window)
        sinks[window] = MemorySink()
        Trainer(s, tmp_path).run(sinks[window])
    per_step, windowed = sinks[1], sinks[default]
    assert windowed.series["train/acc"] == per_step.series["train/acc"]
    assert windowed.steps("train/acc") == windowed.steps("train/loss") == list(range(75))
