"""Every probe against a literal, brute-force implementation, on real models and every norm.

The brute force never uses the probe machinery: it deep-copies the network, writes the
parameters in place, rewinds the noise generator by hand and calls forward/backward, exactly
as one would check the paper's definitions with a pencil. The probed run and a plain run are
trained side by side; the plain one is paused at the probed step and brute-forced there.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from server.spec import NORMS, RunSpec
from worker.engine.sink import MemorySink
from worker.engine.threads import torch_threads
from worker.engine.trainer import Trainer

STEP = 3  # probe at steps 0 and 3; brute-force at 3 (after real training steps)
MULTS = [0.5, 1.0, 4.0]

BASE = {
    "mlp": {"model": "mlp", "depth": 4, "width": 16, "dataset": "digits", "lr": 0.2,
            "batch_size": 32},
    "vgg": {"model": "vgg", "vgg_config": 11, "width": 0.125, "dataset": "digits", "lr": 0.1,
            "batch_size": 16},
    "dln": {"model": "dln", "depth": 5, "width": 6, "dataset": "gaussian_linear",
            "n_samples": 48, "input_dim": 6, "loss": "sum_squares", "lr": 1e-3,
            "batch_size": None},
}
ICS_LAYERS = {"mlp": [2, 4], "vgg": [3, 9], "dln": [2, 5]}


def make_spec(model: str, norm: str, probes: bool) -> RunSpec:
    every = STEP if probes else 0
    return RunSpec.model_validate({
        **BASE[model], "norm": norm, "norm_groups": 2, "steps": STEP + 1, "seed": 7,
        "eval_every": 0, "device": "cpu",
        "probes": {
            "landscape": {"every": every, "multipliers": MULTS},
            "ics": {"every": every, "layers": ICS_LAYERS[model]},
            "activations": {"every": every, "bins": 16, "range": [-3.0, 3.0]},
            "grad_norm": {"every": every}, "distance": {"every": every},
        },
    })


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(probed sink, plain trainer paused at STEP) per (model, norm), built once."""
    cache: dict = {}

    def get(model: str, norm: str):
        if (model, norm) not in cache:
            data_dir = tmp_path_factory.getbasetemp()
            sink = MemorySink()
            Trainer(make_spec(model, norm, True), data_dir).run(sink)
            plain = Trainer(make_spec(model, norm, False), data_dir)
            # w_0, kept before training moves it (the distance probe measures from here)
            plain.probes_off_init = {n: p.detach().clone() for n, p in plain.net.named_parameters()}
            plain.run(MemorySink(), max_steps=STEP)
            cache[model, norm] = (sink, plain)
        return cache[model, norm]

    return get


def brute_loss_grad(trainer: Trainer, params: dict, noise_state):
    """L and grad L at `params` on B_STEP: copy, write in place, rewind noise, forward, backward.
    With the trainer's thread count: float32 sums depend on it, and the comparisons are bitwise."""
    net = copy.deepcopy(trainer.net)
    with torch.no_grad():
        for n, p in net.named_parameters():
            p.copy_(params[n])
    net.noise_generator.set_state(noise_state)
    x, y = trainer.batch(STEP)
    with torch_threads(trainer.threads):
        loss = trainer.loss_fn(net(x), y)
        loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in net.named_parameters()}


def at_step(plain: Trainer):
    """(noise state at the step's start, w_t, L(w_t), g_t) of the paused plain run."""
    noise0 = plain.noise.get_state()
    w = {n: p.detach().clone() for n, p in plain.net.named_parameters()}
    loss, g = brute_loss_grad(plain, w, noise0)
    return noise0, w, loss, g


def flat_norm(tensors) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


CASES = [(m, n) for m in BASE for n in NORMS]


@pytest.mark.parametrize("model,norm", CASES)
def test_landscape_and_gradient_probes_match_brute_force(runs, model, norm):
    sink, plain = runs(model, norm)
    noise0, w, loss0, g = at_step(plain)
    assert sink.series["train/loss"][STEP] == loss0  # the probed run trained identically

    records = sink.etas["landscape"][STEP]
    g_norm = flat_norm(g.values())
    betas = []
    for r, m in zip(records, MULTS, strict=True):
        eta = m * plain.spec.lr
        loss, g2 = brute_loss_grad(plain, {n: w[n] - eta * g[n] for n in w}, noise0)
        d = flat_norm(g2[n] - g[n] for n in g)
        assert r.loss == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert r.grad_dist == pytest.approx(d, rel=1e-4, abs=1e-6)
        betas.append(d / (eta * g_norm))
    assert sink.series["landscape/beta"][STEP] == pytest.approx(max(betas), rel=1e-4)
    assert sink.series["grad/norm"][STEP] == pytest.approx(g_norm, rel=1e-6)
    w0 = dict(plain.probes_off_init)
    assert sink.series["dist/init"][STEP] == pytest.approx(
        flat_norm(w[n] - w0[n] for n in w), rel=1e-6)


@pytest.mark.parametrize("model,norm", CASES)
def test_ics_matches_definition_2_1(runs, model, norm):
    sink, plain = runs(model, norm)
    noise0, w, _, g = at_step(plain)

    # This step's optimiser update, made by a real optimiser step on a copy.
    net_u = copy.deepcopy(plain.net)
    opt_u = torch.optim.SGD(net_u.parameters(), lr=plain.spec.lr)
    opt_u.load_state_dict(copy.deepcopy(plain.optimizer.state_dict()))
    for n, p in net_u.named_parameters():
        p.grad = g[n].clone()
    opt_u.step()
    updated = {n: p.detach() for n, p in net_u.named_parameters()}

    order = [n for n, _ in plain.net.named_parameters()]
    name_of = {id(p): n for n, p in plain.net.named_parameters()}
    for i in ICS_LAYERS[model]:
        w_name = name_of[id(plain.net.weight_layers[i - 1].weight)]
        earlier = set(order[: order.index(w_name)])  # every parameter before W_i, forward order
        mixed = {n: updated[n] if n in earlier else w[n] for n in w}
        _, g_new = brute_loss_grad(plain, mixed, noise0)
        a, b = g[w_name].double().flatten(), g_new[w_name].double().flatten()
        assert sink.series[f"ics/L{i}/l2"][STEP] == pytest.approx(
            float((a - b).norm()), rel=1e-4, abs=1e-7)
        assert sink.series[f"ics/L{i}/cos"][STEP] == pytest.approx(
            float(a @ b / (a.norm() * b.norm())), rel=1e-5)


@pytest.mark.parametrize("model,norm", CASES)
def test_activation_histograms_match_brute_force(runs, model, norm):
    sink, plain = runs(model, norm)
    net = copy.deepcopy(plain.net)
    net.noise_generator.set_state(plain.noise.get_state())
    captured = {}
    for k, slot in enumerate(net.norm_slots, start=1):
        slot.register_forward_hook(lambda _m, _i, out, k=k: captured.__setitem__(k, out.detach()))
    x, _ = plain.batch(STEP)
    net(x)
    dists = {(d.layer, d.scope): d for d in sink.dists[STEP]}
    assert len(dists) == 2 * len(net.norm_slots)
    for k, a in captured.items():
        for scope in ("layer", "unit"):
            d = dists[k, scope]
            v = (a if scope == "layer" else a[:, d.unit]).double().numpy().ravel()
            counts, _ = np.histogram(v, bins=16, range=(-3.0, 3.0))
            assert np.abs(np.array(d.counts) - counts).sum() <= 2  # float32 vs float64 edges
            assert d.underflow == int((v < -3).sum()) and d.overflow == int((v > 3).sum())
            assert sum(d.counts) + d.underflow + d.overflow == v.size
            assert d.mean == pytest.approx(v.mean(), rel=1e-5, abs=1e-6)
            assert d.var == pytest.approx(v.var(), rel=1e-4, abs=1e-6)
            sample = v[:: -(-v.size // (1 << 16))]  # the documented subsample (all, if small)
            assert d.quantiles["q50"] == pytest.approx(np.quantile(sample, 0.5), rel=1e-4,
                                                       abs=1e-5)


@pytest.mark.parametrize("tol,rel", [(1e-3, 2e-3), (1e-7, 1e-5)], ids=["default-tol", "tight"])
@pytest.mark.parametrize("model,norm", [("mlp", "none"), ("mlp", "batch"), ("dln", "batch"),
                                        ("dln", "l2")])
def test_sharpness_matches_full_hessian(tmp_path, model, norm, tol, rel):
    # A narrow net keeps the full Hessian (params^2 entries) cheap to build.
    small = {"width": 8, "depth": 3} if model == "mlp" else {"width": 4, "depth": 4,
                                                            "input_dim": 4}
    spec = make_spec(model, norm, False).model_copy(update={"probes": RunSpec().probes, **small})
    spec.probes.sharpness.every = 1
    spec.probes.sharpness.max_iters = 500
    spec.probes.sharpness.tol = tol
    spec.probes.grad_norm.every = 0
    spec.probes.distance.every = 0
    trainer = Trainer(spec, tmp_path)
    sink = MemorySink()
    trainer.run(sink, max_steps=1)

    fresh = Trainer(spec, tmp_path)
    x, y = fresh.batch(0)
    names = [n for n, _ in fresh.net.named_parameters()]
    shapes = [p.shape for _, p in fresh.net.named_parameters()]
    flat0 = torch.cat([p.detach().flatten() for _, p in fresh.net.named_parameters()]).double()
    net = copy.deepcopy(fresh.net).double()
    state0 = fresh.noise.get_state()

    def loss_of(flat):
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = flat[i : i + s.numel()].view(s)
            i += s.numel()
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        net.noise_generator.set_state(state0)
        out = torch.func.functional_call(net, {**params, **buffers}, (x.double(),))
        return fresh.loss_fn(out, y.double() if y.is_floating_point() else y)

    eigs = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat0))
    top = float(eigs[-1])  # the algebraically largest
    got = sink.series["sharpness/top_eig"][0]
    assert got == pytest.approx(top, rel=rel)
    assert 2 <= sink.series["sharpness/iters"][0] <= 500
    assert not math.isnan(sink.series["sharpness/edge"][0])
