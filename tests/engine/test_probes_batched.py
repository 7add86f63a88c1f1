"""The vmap-batched landscape probe (probes.landscape.batched) against the loop it replaces.

- for every model and normalisation, in train mode (and eval mode for the normalisations with
  running statistics or noise), the batched probe's per-eta losses and gradient distances equal
  the loop's up to fp32 reduction order, and it really ran under vmap (no fallback);
- noisy layers under vmap(randomness="same") draw their noise once, bitwise the noise each pass
  of the loop draws after rewinding;
- where vmap fails the probe falls back to the loop, warns, and records the path;
- the spec option is a strict boolean, off by default.
(The closed-form quadratic test and the probes-on/off trajectory identity run with batched on
too: test_probes_analytic.py and test_trainer.py.)
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import vmap

from server.spec import NORMS, NoiseSpec, RunSpec, SpecError, build_spec
from tests.engine.probe_context import context_at
from tests.engine.small_nets import SMALL as _SMALL
from worker.engine.norms import NoiseInjection
from worker.engine.probes import build_probes
from worker.engine.probes.base import global_norm
from worker.engine.probes.landscape import PATH_KEY, LandscapeProbe
from worker.engine.trainer import Trainer

# One layer shallower than the other engine tests' MLP and DLN: these tests run every
# normalisation of every model through both probe paths.
SMALL = {**_SMALL, "mlp": {**_SMALL["mlp"], "depth": 3},
         "dln": {**_SMALL["dln"], "depth": 5}}
# From far below the LR (the DLN's 0.01, where d(eta) is a small difference of two gradients)
# to far above it.
MULTS = [0.01, 0.5, 1.0, 4.0, 30.0]


def probed_context(tmp_path, model: str, norm: str, mode: str = "train"):
    """(ProbeContext at step 2 of a short run, built as Trainer._measure builds it; the trainer;
    the training loss of step 2)."""
    spec = RunSpec.model_validate({**SMALL[model], "norm": norm, "norm_groups": 2, "steps": 3,
                                   "seed": 5, "device": "cpu", "eval_every": 0})
    t = Trainer(spec, tmp_path)
    ctx, loss = context_at(t, 2, mode)
    return ctx, t, loss.item()


def assert_same_landscape(loop, batched, g_norm: float) -> None:
    assert batched.scalars[PATH_KEY] == 1.0  # really measured under vmap
    assert PATH_KEY not in loop.scalars
    assert len(loop.eta_records) == len(batched.eta_records) == len(MULTS)
    for a, b in zip(loop.eta_records, batched.eta_records, strict=True):
        assert (a.multiplier, a.eta) == (b.multiplier, b.eta)
        if math.isnan(a.loss):
            assert math.isnan(b.loss)
            continue
        assert b.loss == pytest.approx(a.loss, rel=1e-5)
        # d(eta) = ||grad(w - eta g) - g||: a difference of two gradients of size ~||g||, so
        # its fp32 rounding is relative to ||g||, not to d (which is tiny for eta << LR).
        assert b.grad_dist == pytest.approx(a.grad_dist, rel=1e-5, abs=1e-6 * g_norm)
    for key, v in loop.scalars.items():
        assert batched.scalars[key] == pytest.approx(v, rel=1e-4, nan_ok=True), key


CASES = [(m, n) for m in SMALL for n in NORMS]


@pytest.mark.parametrize("model,norm", CASES)
def test_batched_equals_the_loop_for_every_norm(tmp_path, model, norm):
    ctx, _, train_loss = probed_context(tmp_path, model, norm)
    loop = LandscapeProbe(1, MULTS).measure(ctx)
    batched = LandscapeProbe(1, MULTS, batched=True).measure(ctx)
    assert_same_landscape(loop, batched, global_norm(ctx.grads.values()))
    # l(eta -> 0) is the training loss: the batched path sees the training step's noise too
    (zero,) = LandscapeProbe(1, [1e-30], batched=True).measure(ctx).eta_records
    assert zero.loss == pytest.approx(train_loss, rel=1e-5, nan_ok=True)


@pytest.mark.parametrize("model,norm", [("mlp", "batch"), ("mlp", "noisy_batch"),
                                        ("vgg", "batch"), ("vgg", "noisy_batch"),
                                        ("dln", "batch")])
def test_batched_equals_the_loop_in_eval_mode(tmp_path, model, norm):
    """probes.mode eval: BatchNorm reads the (unbatched) running statistics, noise is off."""
    ctx, t, _ = probed_context(tmp_path, model, norm, mode="eval")
    live = {k: v.clone() for k, v in t.net.state_dict().items()}
    loop = LandscapeProbe(1, MULTS).measure(ctx)
    batched = LandscapeProbe(1, MULTS, batched=True).measure(ctx)
    assert_same_landscape(loop, batched, global_norm(ctx.grads.values()))
    assert all(torch.equal(v, t.net.state_dict()[k]) for k, v in live.items())


def test_noise_under_vmap_is_drawn_once_and_equals_the_loops_bitwise():
    """vmap(randomness="same") draws each noisy layer's noise once for all K parameter sets:
    bitwise what every rewound pass of the loop draws (elementwise ops: no rounding order)."""
    gen = torch.Generator().manual_seed(11)
    layer = NoiseInjection(6, NoiseSpec(), gen)
    a = torch.randn(4, 5, 6, 3, 3, generator=torch.Generator().manual_seed(0))  # K=4 of (N,C,H,W)
    start = gen.get_state()
    batched = vmap(layer, randomness="same")(a)
    after_batched = gen.get_state()
    for k in range(4):
        gen.set_state(start)
        assert torch.equal(batched[k], layer(a[k])), k
    assert torch.equal(gen.get_state(), after_batched)  # one draw, as one pass of the loop


def test_a_vmap_failure_falls_back_to_the_loop_and_says_so(tmp_path, monkeypatch):
    ctx, _, _ = probed_context(tmp_path, "mlp", "batch")
    loop = LandscapeProbe(1, MULTS).measure(ctx)
    probe = LandscapeProbe(1, MULTS, batched=True)
    calls = []

    def no_batching_rule(etas):
        calls.append(etas)
        raise RuntimeError("Batching rule not implemented for aten::something")

    monkeypatch.setattr(ctx, "losses_and_grads_along", no_batching_rule)
    with pytest.warns(RuntimeWarning, match="using the loop"):
        out = probe.measure(ctx)
    assert out.scalars[PATH_KEY] == 0.0
    assert "Batching rule not implemented" in probe.fallback
    assert [r.loss for r in out.eta_records] == [r.loss for r in loop.eta_records]  # bitwise
    assert [r.grad_dist for r in out.eta_records] == [r.grad_dist for r in loop.eta_records]
    out = probe.measure(ctx)  # the rest of the run stays on the loop: no retry, no warning
    assert out.scalars[PATH_KEY] == 0.0 and len(calls) == 1


def test_the_stacked_parameters_are_the_loops_bitwise_and_reused(tmp_path):
    ctx, _, _ = probed_context(tmp_path, "vgg", "batch")
    etas = [m * ctx.lr for m in MULTS]
    ctx.losses_and_grads_along(etas)
    stacked = ctx.shadow.stacked(len(etas))
    for n in ctx.names:
        for k, eta in enumerate(etas):
            assert torch.equal(stacked[n][k], torch.add(ctx.params[n], ctx.grads[n], alpha=-eta))
    ptrs = [t.data_ptr() for t in stacked.values()]
    ctx.losses_and_grads_along(etas)
    assert [t.data_ptr() for t in ctx.shadow.stacked(len(etas)).values()] == ptrs


def test_the_spec_option(tmp_path):
    assert RunSpec().probes.landscape.batched is False
    spec = build_spec({**SMALL["mlp"], "probes": {"landscape": {"every": 1, "batched": True}}})
    assert spec.probes.landscape.batched is True
    loop = build_spec({**SMALL["mlp"], "probes": {"landscape": {"every": 1}}})
    assert spec.probe_cost() == loop.probe_cost()  # the same K passes of work, batched
    for bad in ("yes", 1, "true", None):
        with pytest.raises(SpecError, match="probes.landscape.batched"):
            build_spec({"probes": {"landscape": {"batched": bad}}})
    t = Trainer(spec.model_copy(update={"device": "cpu"}), tmp_path)
    (probe,) = [p for p in build_probes(spec, t.net, t.params) if p.name == "landscape"]
    assert probe.batched is True
