"""worker/engine/introspect.py: the layout of any nn.Module from one traced forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from server.spec import RunSpec
from worker.engine.introspect import describe
from worker.engine.models import build_model


def engine_net(model: str, norm: str):
    base = {
        "mlp": {"model": "mlp", "depth": 4, "width": 16, "dataset": "digits"},
        "vgg": {"model": "vgg", "vgg_config": 11, "width": 0.125, "dataset": "digits"},
        "dln": {"model": "dln", "depth": 5, "width": 6, "dataset": "gaussian_linear",
                "input_dim": 6, "loss": "sum_squares"},
    }[model]
    spec = RunSpec.model_validate({**base, "norm": norm, "norm_groups": 2, "seed": 3})
    shape = (1, 8, 8) if model != "dln" else (6,)
    net = build_model(spec, shape, 10 if model != "dln" else 6, torch.Generator())
    return net, torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model", ["mlp", "vgg", "dln"])
@pytest.mark.parametrize("norm", ["none", "batch", "noisy_batch", "group", "layer", "l1"])
def test_agrees_with_the_engine_net(model, norm):
    """On the engine's own networks the traced layout is exactly the one the builder recorded."""
    net, x = engine_net(model, norm)
    layout = describe(net, x)
    assert layout.weight_layers == net.weight_layers
    # The engine's norm "none" is an nn.Identity in the body, which is no normalisation: the
    # layout's placeholders stand in for it (outside the model), and the activation points are
    # the weight layers' outputs, which is what that Identity outputs.
    if norm == "none":
        assert not any(layout.slot_present)
    else:
        assert all(layout.slot_present)
        assert layout.norm_slots == net.norm_slots
    assert layout.param_layer_index() == net.param_layer_index()
    assert len(layout.widths) == len(net.weight_layers) - 1


class Block(nn.Module):
    """A residual block whose shortcut conv is registered BEFORE the main path but runs after."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.gate = nn.Parameter(torch.zeros(()))  # used after conv2 (a residual gate)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x.new_zeros(()) + self.gate * self.conv2(h) + self.shortcut(x))


class UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)  # registered first, runs last
        self.scale = nn.Parameter(torch.ones(()))  # used before any weight layer
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.stem_norm = nn.GroupNorm(2, 4)
        self.block = Block(4, 8)
        self.drop = nn.Dropout(0.3)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        h = torch.relu(self.stem_norm(self.stem(x * self.scale)))
        h = self.drop(self.block(h))
        return self.head(h.mean(dim=(2, 3)))


def test_forward_order_not_registration_order():
    net = UserNet()
    x = torch.randn(5, 1, 6, 6)
    layout = describe(net, x)
    b = net.block
    assert layout.weight_layers == [net.stem, b.conv1, b.conv2, b.shortcut, net.head]
    assert layout.weight_names == ["stem", "block.conv1", "block.conv2", "block.shortcut", "head"]
    assert layout.slot_present == [True, True, False, False]
    assert layout.norm_slots[:2] == [net.stem_norm, b.bn1]
    assert all(isinstance(s, nn.Identity) for s in layout.norm_slots[2:])
    assert layout.widths == [4, 8, 8, 8]
    idx = layout.param_layer_index()
    assert idx["scale"] == 0  # before layer 1: an "earlier layer" for every ICS layer
    assert idx["stem.weight"] == idx["stem_norm.weight"] == 1
    assert idx["block.bn1.bias"] == 2
    assert idx["block.gate"] == 3  # read right after conv2 ran (before the shortcut)
    assert idx["head.weight"] == 5
    assert idx["unused.weight"] == 5  # never ran: follows the last layer (changes no loss)
    assert list(idx) == [n for n, _ in net.named_parameters()]
    assert layout.weight_param_names() == [
        "stem.weight", "block.conv1.weight", "block.conv2.weight", "block.shortcut.weight",
        "head.weight"]
    points, hook = layout.activation_points("norm_output")
    assert hook == "output" and points == [net.stem_norm, b.bn1, b.conv2, b.shortcut]
    points, hook = layout.activation_points("layer_input")
    assert hook == "input" and points == layout.weight_layers[1:]


def test_tracing_changes_nothing():
    """Buffers (BN running statistics) and the global RNG (dropout draws) are untouched."""
    net = UserNet().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    describe(net, torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(torch.get_rng_state(), rng)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net.training
    assert not net._forward_hooks and not net._forward_pre_hooks


def test_tracing_leaves_module_generators_alone():
    """The engine's noisy BatchNorm draws from a generator the net holds: rewound too."""
    net, x = engine_net("mlp", "noisy_batch")
    gen = net.noise_generator
    gen.manual_seed(4)
    state = gen.get_state()
    describe(net.train(), x)
    assert torch.equal(gen.get_state(), state)


def test_shared_layer_counts_once_and_tuple_input():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x, z):
            return self.b(self.a(self.a(x)) + z)

    net = Twice()
    layout = describe(net, (torch.randn(3, 4), torch.randn(3, 4)))
    assert layout.weight_layers == [net.a, net.b]


def test_no_weight_layer_is_a_clear_error():
    with pytest.raises(ValueError, match="no Conv or Linear"):
        describe(nn.Sequential(nn.ReLU()), torch.randn(2, 3))
