"""CIFAR ResNets (worker/engine/resnet.py): shapes, He et al.'s parameter counts, option-A
shortcuts, skip on and off, every normalisation, and the positions the probes need."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from server.spec import NORMS, RunSpec, SpecError, build_spec
from worker.engine.models import build_model
from worker.engine.resnet import BasicBlock, PadShortcut, ResNet

DIGITS, CIFAR = (1, 8, 8), (3, 32, 32)


def make(norm: str = "batch", skip: bool = True, depth: int = 20, seed: int = 0,
         dataset: str = "digits", **fields) -> tuple[ResNet, RunSpec]:
    spec = RunSpec(model="resnet", resnet_depth=depth, skip=skip, norm=norm, seed=seed,
                   dataset=dataset, norm_groups=4, **fields)
    shape = DIGITS if dataset == "digits" else CIFAR
    return build_model(spec, shape, 10, torch.Generator().manual_seed(1)), spec


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("depth,params", [(20, 269_722), (32, 464_154), (56, 853_018)])
def test_parameter_counts_are_he_et_als(depth, params):
    """He et al. 2016, Table 6: 0.27M, 0.46M, 0.85M (option A shortcuts, BN, no conv bias)."""
    for skip in (True, False):
        net, _ = make("batch", skip, depth, dataset="cifar10")
        assert n_params(net) == params
    # By hand: stem, 3 stages of n blocks x 2 convs, BN affines, classifier.
    n = (depth - 2) // 6
    convs = 3 * 16 * 9 + 2 * n * 16 * 16 * 9 + 16 * 32 * 9 + (2 * n - 1) * 32 * 32 * 9 \
        + 32 * 64 * 9 + (2 * n - 1) * 64 * 64 * 9
    bn = 2 * (16 + 2 * n * (16 + 32 + 64))
    assert params == convs + bn + 64 * 10 + 10


@pytest.mark.parametrize("dataset,shape,final", [("cifar10", CIFAR, (8, 8)),
                                                 ("digits", DIGITS, (2, 2))])
@pytest.mark.parametrize("depth", [20, 32, 56])
def test_shapes_and_stage_strides(dataset, shape, final, depth):
    net, spec = make("batch", True, depth, dataset=dataset)
    assert net(torch.randn(3, *shape)).shape == (3, 10)
    assert net.info["final_spatial"] == final
    assert net.info["blocks_per_stage"] == (depth - 2) // 6
    convs = net.weight_layers[:-1]
    assert [c.out_channels for c in convs] == spec.layer_widths()
    strides = [c.stride[0] for c in convs]
    n = (depth - 2) // 6
    assert [i for i, s in enumerate(strides) if s == 2] == [1 + 2 * n, 1 + 4 * n]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert net.weight_layers[-1].in_features == 64


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_builds_with_the_positions_the_probes_need(norm, skip):
    net, spec = make(norm, skip)
    out = net(torch.randn(4, *DIGITS))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert len(net.weight_layers) == spec.n_weight_layers() == 20
    assert len(net.norm_slots) == 19 == len(spec.layer_widths())
    if norm == "none":
        assert all(isinstance(s, nn.Identity) for s in net.norm_slots)
    # The weight layers are every conv/linear module, in the order the forward runs them.
    ran: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda m, _a: ran.append(m)) for m in net.modules()
             if isinstance(m, nn.Conv2d | nn.Linear)]
    net(torch.randn(2, *DIGITS))
    for h in hooks:
        h.remove()
    assert [id(m) for m in ran] == [id(w) for w in net.weight_layers]
    # Each slot's module runs right after its weight layer (and before the next one).
    order: list[nn.Module] = []
    slots = {id(s) for s in net.norm_slots}
    hooks = [m.register_forward_pre_hook(lambda m, _a: order.append(m)) for m in net.modules()
             if id(m) in slots or isinstance(m, nn.Conv2d | nn.Linear)]
    net(torch.randn(2, *DIGITS))
    for h in hooks:
        h.remove()
    expected = [m for pair in zip(net.weight_layers, net.norm_slots, strict=False)
                for m in pair] + [net.weight_layers[-1]]
    assert [id(m) for m in order] == [id(m) for m in expected]


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("norm", ["none", "batch", "noisy_batch", "l2", "group"])
def test_param_layer_index_is_in_forward_order(norm, skip):
    net, spec = make(norm, skip)
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


def test_introspection_of_the_built_net_agrees():
    """worker/engine/introspect.py traces any module's forward: it finds the same layers."""
    introspect = pytest.importorskip("worker.engine.introspect")
    net, _ = make("batch", True)
    layout = introspect.describe(net, torch.randn(4, *DIGITS))
    assert [id(m) for m in layout.weight_layers] == [id(m) for m in net.weight_layers]
    assert [id(m) for m in layout.norm_slots] == [id(m) for m in net.norm_slots]
    assert layout.param_layer_index() == net.param_layer_index()


@pytest.mark.parametrize("norm", NORMS)
def test_skip_and_noshort_share_parameters_names_and_values(norm):
    """Option A shortcuts have no parameters: the two nets differ only in the identity paths,
    so a random direction (keyed by parameter name) is the same for both."""
    a, _ = make(norm, True, seed=5)
    b, _ = make(norm, False, seed=5)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(8, *DIGITS)
    assert not torch.allclose(a.eval()(x), b.eval()(x))
    assert sum(isinstance(m, PadShortcut) for m in a.modules()) == 2
    assert not any(isinstance(m, PadShortcut | nn.Identity) and n.endswith("shortcut")
                   for n, m in b.named_modules())


def test_conv_bias_only_where_the_norm_has_no_shift():
    for norm in NORMS:
        net, _ = make(norm)
        biased = {c.bias is not None for c in net.weight_layers[:-1]}
        assert biased == {norm in ("none", "noise")}, norm
        assert net.weight_layers[-1].bias is not None


def test_a_block_is_relu_of_branch_plus_shortcut():
    """With the second convolution zeroed (no norm), a block's branch is its bias, zero:
    with skips the block passes its (non-negative) input on; without, it outputs zeros."""
    for skip in (True, False):
        net, _ = make("none", skip)
        with torch.no_grad():
            for block in net.modules():
                if isinstance(block, BasicBlock):
                    block.conv2.weight.zero_()
        block = net.stage1[1]
        x = torch.rand(2, 16, 8, 8)
        torch.testing.assert_close(block(x), x if skip else torch.zeros_like(x))


def test_option_a_shortcut_subsamples_and_pads_with_zero_channels():
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(2, 16)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(y[:, 16:], torch.zeros(2, 16, 4, 4))
    odd = PadShortcut(2, 32)(torch.randn(1, 32, 5, 5))  # odd maps: as a 3x3/2 conv, ceil
    assert odd.shape == (1, 64, 3, 3)


def test_glorot_uniform_init_zero_biases_and_a_function_of_the_seed_only():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a, _ = make("noisy_batch", seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    b, _ = make("noisy_batch", seed=3)
    c, _ = make("noisy_batch", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    net, _ = make("none")
    for w in net.weight_layers:
        fan_out, fan_in = w.weight.shape[0], w.weight[0].numel()
        bound = math.sqrt(6 / (fan_in + fan_out * w.weight[0, 0].numel()))
        assert w.weight.abs().max() <= bound
        if w.weight.numel() >= 2000:
            assert w.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert torch.equal(w.bias, torch.zeros_like(w.bias))


def test_norm_slot_output_is_before_the_shortcut_and_the_nonlinearity():
    net, _ = make("batch")
    seen: list[torch.Tensor] = []
    for s in net.norm_slots:
        s.register_forward_hook(lambda _m, _i, out: seen.append(out))
    net(torch.randn(16, *DIGITS))
    assert len(seen) == 19
    assert all((o < 0).any() for o in seen)  # BN output, not clipped by an (in-place) ReLU
    for o in seen:  # batch statistics: zero mean, unit variance per channel
        torch.testing.assert_close(o.mean(dim=(0, 2, 3)), torch.zeros(o.shape[1]),
                                   atol=1e-5, rtol=0)


def test_the_spec_rejects_what_a_resnet_cannot_be():
    with pytest.raises(SpecError) as e:
        build_spec({"model": "resnet", "resnet_depth": 44, "dataset": "digits"})
    assert e.value.path == "resnet_depth"
    with pytest.raises(SpecError, match="needs image data"):
        build_spec({"model": "resnet", "dataset": "mnist1d"})
    with pytest.raises(SpecError, match="applies to model 'resnet' only") as e:
        build_spec({"model": "vgg", "dataset": "digits", "skip": False})
    assert e.value.path == "skip"
    with pytest.raises(SpecError) as e:
        build_spec({"model": "resnet", "dataset": "digits", "skip": "no"})
    assert e.value.path == "skip"
    with pytest.raises(SpecError, match="exceed the model's 20 weight layers"):
        build_spec({"model": "resnet", "dataset": "digits",
                    "probes": {"ics": {"every": 1, "layers": [21]}}})
    spec = build_spec({"model": "resnet", "dataset": "cifar10", "resnet_depth": 56,
                       "skip": False, "norm": "batch"})
    assert spec.name_hint() == "resnet56-noshort-batch-lr0.1-s0"
    assert spec.layer_widths() == [16] * 19 + [32] * 18 + [64] * 18
