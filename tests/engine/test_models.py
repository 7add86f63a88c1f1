"""Models: VGG, DLN and MLP with every normalisation (paper-protocol.md, "Models")."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from server.spec import NORMS, RunSpec
from worker.engine.models import Net, build_model

# Small but structurally faithful configurations: (spec fields, in_shape, n_outputs).
CASES = {
    "vgg": ({"model": "vgg", "dataset": "digits", "width": 0.125}, (1, 8, 8), 10),
    "dln": (
        {"model": "dln", "dataset": "gaussian_linear", "loss": "sum_squares", "width": 16,
         "depth": 5},
        (10,),
        10,
    ),
    "mlp": ({"model": "mlp", "width": 16, "depth": 4}, (40,), 10),
}


def make(model: str, norm: str = "batch", seed: int = 0, **fields) -> tuple[Net, RunSpec, tuple]:
    base, in_shape, n_out = CASES[model]
    spec = RunSpec(**{**base, "norm": norm, "seed": seed, **fields})
    return build_model(spec, in_shape, n_out, torch.Generator().manual_seed(1)), spec, in_shape


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("model", list(CASES))
def test_builds_and_exposes_weight_layers_and_norm_slots(model, norm):
    net, spec, in_shape = make(model, norm)
    out = net(torch.randn(4, *in_shape))
    assert out.shape == (4, CASES[model][2])
    assert len(net.weight_layers) == spec.n_weight_layers()
    assert len(net.norm_slots) == spec.n_weight_layers() - 1 == len(spec.layer_widths())
    assert all(isinstance(w, nn.Conv2d | nn.Linear) for w in net.weight_layers)
    assert isinstance(net.weight_layers[-1], nn.Linear)
    if norm == "none":
        assert all(isinstance(s, nn.Identity) for s in net.norm_slots)
    # Weight layers, in forward order, are the only conv/linear modules; the slots follow them.
    in_order = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert [id(m) for m in in_order] == [id(w) for w in net.weight_layers]
    positions = {id(m): k for k, m in enumerate(net.body)}
    for w, s in zip(net.weight_layers, net.norm_slots, strict=False):
        assert positions[id(s)] == positions[id(w)] + 1


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("model", list(CASES))
def test_param_layer_index_and_forward_order(model, norm):
    net, spec, _ = make(model, norm)
    index = net.param_layer_index()
    names = [n for n, _ in net.named_parameters()]
    assert list(index) == names
    layers = [index[n] for n in names]
    assert layers == sorted(layers)  # named_parameters() runs from input to output
    by_id = {id(p): n for n, p in net.named_parameters()}
    for i, w in enumerate(net.weight_layers, start=1):
        assert {index[by_id[id(p)]] for p in w.parameters()} == {i}
    for i, s in enumerate(net.norm_slots, start=1):
        assert all(index[by_id[id(p)]] == i for p in s.parameters())
    assert set(layers) == set(range(1, spec.n_weight_layers() + 1))


@pytest.mark.parametrize("model", list(CASES))
def test_glorot_uniform_init_and_zero_biases(model):
    net, _, _ = make(model, "batch")
    for w in net.weight_layers:
        fan_out, fan_in = w.weight.shape[0], w.weight[0].numel()
        receptive = w.weight[0, 0].numel()
        bound = math.sqrt(6 / (fan_in + fan_out * receptive))
        assert w.weight.abs().max() <= bound
        if w.weight.numel() >= 500:  # filled to the bound, with uniform spread
            assert w.weight.abs().max() > 0.95 * bound
            assert w.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        if w.bias is not None:
            assert torch.equal(w.bias, torch.zeros_like(w.bias))


@pytest.mark.parametrize("model", list(CASES))
def test_init_is_a_function_of_the_seed_only(model):
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a, _, _ = make(model, "noisy_batch", seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    torch.manual_seed(2)
    b, _, _ = make(model, "noisy_batch", seed=3)
    c, _, _ = make(model, "noisy_batch", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("model", list(CASES))
def test_norm_slot_output_is_before_the_nonlinearity(model):
    net, _, in_shape = make(model, "batch")
    seen: list[torch.Tensor] = []
    for s in net.norm_slots:
        s.register_forward_hook(lambda _m, _i, out: seen.append(out))
    net(torch.randn(8, *in_shape))
    assert len(seen) == len(net.norm_slots)
    assert all((o < 0).any() for o in seen)  # BN output, not clipped by an (in-place) ReLU


def test_batch_norm_kind_follows_the_layer():
    vgg, _, _ = make("vgg", "batch")
    mlp, _, _ = make("mlp", "batch")
    assert all(isinstance(s, nn.BatchNorm2d) for s in vgg.norm_slots)
    assert all(isinstance(s, nn.BatchNorm1d) for s in mlp.norm_slots)


def test_vgg11_on_digits_skips_pools_below_2x2():
    net, _, _ = make("vgg", "none", width=0.25)
    assert net.info == {"skipped_pools": [9, 12], "final_spatial": (1, 1)}
    assert net.weight_layers[-1].in_features == round(512 * 0.25)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 3


def test_vgg11_on_cifar_matches_the_protocol():
    spec = RunSpec(model="vgg", dataset="cifar10", width=0.25, norm="batch")
    net = build_model(spec, (3, 32, 32), 10, torch.Generator())
    assert net.info == {"skipped_pools": [], "final_spatial": (1, 1)}
    head = net.weight_layers[-1]
    assert (head.in_features, head.out_features) == (round(512 * 0.25), 10)
    assert [w.out_channels for w in net.weight_layers[:-1]] == spec.layer_widths()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vgg16_has_14_weight_layers():
    spec = RunSpec(model="vgg", dataset="cifar10", vgg_config=16, width=0.0625)
    net = build_model(spec, (3, 32, 32), 10, torch.Generator())
    assert len(net.weight_layers) == 14 and len(net.norm_slots) == 13


def test_dln_is_linear_and_bias_free():
    net, _, _ = make("dln", "none")
    assert all(w.bias is None for w in net.weight_layers)
    assert [(w.in_features, w.out_features) for w in net.weight_layers] == (
        [(10, 16)] + [(16, 16)] * 3 + [(16, 10)]
    )
    x, y = torch.randn(3, 10), torch.randn(3, 10)
    torch.testing.assert_close(net(2 * x - y), 2 * net(x) - net(y))


def test_mlp_flattens_images():
    spec = RunSpec(model="mlp", dataset="digits", width=16, depth=2, norm="l2")
    net = build_model(spec, (1, 8, 8), 10, torch.Generator())
    assert net.weight_layers[0].in_features == 64
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_depth_one_has_no_norm_slot():
    net, _, in_shape = make("mlp", "batch", depth=1)
    assert len(net.weight_layers) == 1 and net.norm_slots == []
    assert net(torch.randn(2, *in_shape)).shape == (2, 10)


def test_noise_generator_state_replays_the_noise():
    net, _, in_shape = make("vgg", "noisy_batch")
    x = torch.randn(4, *in_shape)
    saved = net.noise_generator.get_state()  # what a probe saves and restores
    first = net(x)
    net.noise_generator.set_state(saved)
    assert torch.equal(net(x), first)
    assert not torch.equal(net(x), first)
