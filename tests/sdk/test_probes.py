"""landscope.Probes on a user's own loop: training stays bit-identical (global RNG included),
probes see the training step's dropout masks, and on an engine network every value equals
the engine's own."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from landscope.sdk.probes import Probes, probes_spec
from server.spec import RunSpec
from worker.engine.sink import MemorySink
from worker.engine.threads import torch_threads
from worker.engine.trainer import Trainer


class ResidualDropNet(nn.Module):
    """A network the engine does not know: a residual CNN with BatchNorm and dropout (the
    dropout feeds a conv, so the activations after it depend on the mask)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.4)
        self.conv1 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        h = torch.relu(self.bn0(self.stem(x)))
        r = torch.relu(self.bn1(self.conv1(self.drop(h))))
        h = torch.relu(h + self.conv2(nn.functional.dropout(r, 0.2, self.training)))
        return self.head(h.mean(dim=(2, 3)))


def batches(n: int, device="cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 16, 1, 6, 6, generator=g)
    y = torch.randint(0, 4, (n, 16), generator=g)
    return [(x[i].to(device), y[i].to(device)) for i in range(n)]


ALL_ON = {
    "landscape": {"every": 3, "multipliers": [0.5, 2.0]},
    "ics": {"every": 4, "layers": [2, 3, 4]},
    "activations": {"every": 5, "bins": 8},
    "sharpness": {"every": 7, "iters": 3},
    "grad_norm": 1,
    "distance": 2,
}


def train(steps: int, probes: dict | None, device="cpu", measure_at=None, seed=123):
    """30 steps of SGD (momentum, weight decay) with the global RNG driving dropout; returns
    (model, optimizer, global RNG state after, sink)."""
    torch.manual_seed(seed)
    model = ResidualDropNet().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    loss_fn = nn.functional.cross_entropy
    p = Probes(model, loss_fn, opt, **probes) if probes is not None else None
    losses = []
    for step, (x, y) in enumerate(batches(steps, device)):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        losses.append(loss.item())
        if p is not None and (measure_at is None or measure_at(step)):
            p.measure(step, x, y)
        opt.step()
        if step % 10 == 9:  # an evaluation in the loop: no autograd, eval mode
            model.eval()
            with torch.no_grad():
                model(x)
            model.train()
    rng = torch.cuda.get_rng_state() if device != "cpu" else torch.get_rng_state()
    return model, opt, rng, (p.sink if p else None), losses


def assert_same_training(a, b):
    ma, oa, ra, _, la = a
    mb, ob, rb, _, lb = b
    assert la == lb
    for (n, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert torch.equal(x, y), n  # parameters and BatchNorm running statistics
    for sa, sb in zip(oa.state_dict()["state"].values(), ob.state_dict()["state"].values(),
                      strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert torch.equal(ra, rb)


@pytest.mark.parametrize("batched", [False, True])
def test_training_is_bit_identical_with_every_probe(batched):
    plain = train(30, None)
    opts = {**ALL_ON, "landscape": {**ALL_ON["landscape"], "batched": batched}}
    probed = train(30, opts)
    assert_same_training(plain, probed)
    sink = probed[3]
    assert sink.steps("landscape/beta") == list(range(0, 30, 3))
    assert sink.steps("ics/L4/cos") == list(range(0, 30, 4))
    assert sink.steps("sharpness/top_eig") == list(range(0, 30, 7))
    assert sink.steps("dist/init") == list(range(0, 30, 2))
    assert sorted(sink.dists) == list(range(0, 30, 5))
    assert len(sink.dists[5]) == 2 * 3  # 3 slots (1 placeholder), layer + sampled unit each
    assert all(math.isfinite(v) for v in sink.values("landscape/beta"))
    if batched:
        assert sink.values("probe_path/landscape_batched") == [1.0] * 10


def test_skipped_steps_replay_the_same_activations():
    """measure() called at some steps only: the armed-hook guess misses, the forward is
    replayed on the shadow with the step's random state: the same histograms."""
    opts = {"activations": {"every": 5, "bins": 8}, "grad_norm": 0, "distance": 0}
    every = train(12, opts)
    sparse = train(12, opts, measure_at=lambda s: s in (0, 5, 10))
    assert_same_training(every, sparse)
    for step in (0, 5, 10):
        assert every[3].dists[step] == sparse[3].dists[step]


def test_probes_see_the_training_steps_dropout_masks():
    """l(eta) for a tiny eta is the training loss only if the probe pass draws the same masks
    as the training forward (dropout p=0.4 moves the loss by far more than 1e-4)."""
    torch.manual_seed(5)
    model = ResidualDropNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probes = Probes(model, nn.functional.cross_entropy, opt,
                    landscape={"every": 1, "multipliers": [1e-6]})
    for step, (x, y) in enumerate(batches(4)):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        probes.measure(step, x, y)
        opt.step()
        assert probes.sink.series["landscape/loss_min"][step] == pytest.approx(loss.item(),
                                                                                rel=1e-5)


ENGINE = {
    "mlp": {"model": "mlp", "depth": 4, "width": 16, "dataset": "digits", "lr": 0.2,
            "batch_size": 32, "norm": "noisy_batch"},
    "vgg": {"model": "vgg", "vgg_config": 11, "width": 0.125, "dataset": "digits", "lr": 0.1,
            "batch_size": 16, "norm": "batch", "momentum": 0.9},
}
ENGINE_PROBES = {
    "landscape": {"every": 2, "multipliers": [0.5, 1.0, 4.0]},
    "ics": {"every": 3, "layers": [1, 2, 4]},
    "activations": {"every": 2, "bins": 16, "range": [-3.0, 3.0]},
    "sharpness": {"every": 3, "iters": 4},
    "grad_norm": {"every": 1},
    "distance": {"every": 2},
}


@pytest.mark.parametrize("model", ["mlp", "vgg"])
def test_values_equal_the_engines(model, tmp_path):
    """The engine's trainer with probes vs the same network trained in a user loop with
    landscope.Probes: every scalar, eta record and histogram identical."""
    steps, seed = 7, 11
    base = {**ENGINE[model], "steps": steps, "seed": seed, "eval_every": 0, "device": "cpu"}
    engine_sink = MemorySink()
    Trainer(RunSpec.model_validate({**base, "probes": ENGINE_PROBES}), tmp_path).run(engine_sink)

    off = {k: {"every": 0} for k in ENGINE_PROBES}
    t = Trainer(RunSpec.model_validate({**base, "probes": off}), tmp_path)
    probes = Probes(t.net, t.loss_fn, t.optimizer, seed=seed, **ENGINE_PROBES)
    with torch_threads(t.threads):  # the engine's count: float32 sums depend on it
        for step in range(steps):
            x, y = t.batch(step)
            loss = t.loss_fn(t.net(x), y)
            t.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            probes.measure(step, x, y)
            t.optimizer.step()
    sdk = probes.sink
    keys = {k for k in engine_sink.series if not k.startswith(("probe_time/", "train/", "time/"))}
    assert keys == {k for k in sdk.series if not k.startswith("probe_time/")}
    for k in keys:
        assert engine_sink.series[k] == sdk.series[k], k
    assert engine_sink.etas == sdk.etas
    assert engine_sink.dists == sdk.dists
    assert any(k.startswith("ics/L4/") for k in keys)


def test_options_are_validated_like_the_service():
    model = ResidualDropNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="landscape.multipliers"):
        Probes(model, nn.functional.cross_entropy, opt, landscape={"every": 1,
                                                                  "multipliers": [-1.0]})
    with pytest.raises(ValueError, match="ics.every"):
        Probes(model, nn.functional.cross_entropy, opt, ics={"every": -3})
    with pytest.raises(ValueError, match="mode"):
        Probes(model, nn.functional.cross_entropy, opt, mode="test")
    with pytest.raises(TypeError, match="hessian"):
        Probes(model, nn.functional.cross_entropy, opt, hessian={"every": 1})
    with pytest.raises(TypeError, match="unknown probe"):
        probes_spec(hessian={"every": 1})
    other = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="optimizer over trainable parameters"):
        Probes(model, nn.functional.cross_entropy, other, ics={"every": 1})
    with pytest.raises(ValueError, match="the model has 4 weight layers"):
        Probes(model, nn.functional.cross_entropy, opt, ics={"every": 1, "layers": [9]},
               example_input=torch.randn(2, 1, 6, 6))


def test_no_run_keeps_a_memory_sink_and_remove_unhooks():
    model = ResidualDropNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with Probes(model, nn.functional.cross_entropy, opt) as probes:
        nn.functional.cross_entropy(model(x), y).backward()
        out = probes.measure(0, x, y)
        assert set(out) >= {"grad/norm", "dist/init"} and out["dist/init"] == 0.0
        assert probes.sink.values("grad/norm") == [out["grad/norm"]]
    assert not model._forward_hooks and not model._forward_pre_hooks
    with pytest.raises(RuntimeError, match="removed"):
        probes.measure(1, x, y)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bit_identical_on_cuda():
    """The CUDA generator (dropout on the GPU) is rewound and restored as the CPU one is."""
    plain = train(12, None, device="cuda")
    probed = train(12, ALL_ON, device="cuda")
    assert_same_training(plain, probed)
