"""server/cost.py's ResNet estimates against the built torch model: the exact parameter count,
layer outputs counted by forward hooks on a real batch, and the tensors autograd keeps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from server.cost import ACTIVATION_FACTOR, MB, data_shape, estimate, train_batch
from server.spec import NORMS, RunSpec
from tests.engine.test_cost import NO_PROBES, engine_model, n_params, saved_for_backward
from worker.engine.resnet import BasicBlock, GlobalAvgPool, PadShortcut


def spec_for(norm: str, skip: bool = True, depth: int = 20, dataset: str = "digits",
             batch: int = 8) -> RunSpec:
    return RunSpec.model_validate({
        "model": "resnet", "resnet_depth": depth, "skip": skip, "norm": norm,
        "dataset": dataset, "batch_size": batch, "norm_groups": 4, "probes": NO_PROBES})


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("norm", NORMS)
def test_params_are_the_built_models_exact_count(norm, skip):
    spec = spec_for(norm, skip)
    assert estimate(spec).params == n_params(engine_model(spec))


@pytest.mark.parametrize("depth", [32, 56])
@pytest.mark.parametrize("norm", ["none", "batch", "noise", "group"])
def test_params_at_every_depth_on_cifar(norm, depth):
    spec = spec_for(norm, True, depth, "cifar10")
    assert estimate(spec).params == n_params(engine_model(spec))


def layer_outputs(net: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(elements of every new tensor a forward makes, bytes autograd keeps for backward).

    New tensors: weight layers, norm slots (a noisy norm's pair counts once: its output),
    ReLUs, the padded shortcuts, the pool, and each skip block's sum (the block's output is
    the ReLU of it, the same size). Identity and Flatten make none.
    """
    counted = [0]

    def count(_m, _inputs, out):
        counted[0] += out.numel()

    slots = {id(s) for s in net.norm_slots if not isinstance(s, nn.Identity)}
    handles = []
    for m in net.modules():
        leaf_kind = isinstance(m, nn.Conv2d | nn.Linear | nn.ReLU | PadShortcut
                               | GlobalAvgPool)
        skip_sum = isinstance(m, BasicBlock) and m.shortcut is not None
        if leaf_kind or id(m) in slots or skip_sum:
            handles.append(m.register_forward_hook(count))
    net(x)
    for h in handles:
        h.remove()
    return counted[0]


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("norm", NORMS)
def test_activations_are_the_layer_outputs_of_a_real_batch(norm, skip):
    spec = spec_for(norm, skip)
    net = engine_model(spec).train()
    x = torch.randn(train_batch(spec), *data_shape(spec).in_shape)
    counted = layer_outputs(net, x)
    saved = saved_for_backward(spec, net, x)
    c = estimate(spec)
    assert c.activation_elements == counted
    estimated = c.activation_mb * MB
    assert estimated == 4 * counted * ACTIVATION_FACTOR
    assert saved <= estimated <= 8 * saved


def test_cifar_resnet56_paper_scale_numbers():
    """The paper preset's run: 0.85M parameters, activations of a 128-batch in GiB, not TiB."""
    spec = RunSpec.model_validate({"model": "resnet", "resnet_depth": 56, "dataset": "cifar10",
                                   "norm": "batch", "batch_size": 128})
    c = estimate(spec)
    assert c.params == 853_018
    net = engine_model(spec).train()
    x = torch.randn(2, 3, 32, 32)
    per_sample = layer_outputs(net, x) // 2
    assert c.activation_elements == 128 * per_sample
    assert 1 < c.memory_mb / 1024 < 8
    assert estimate(spec.model_copy(update={"skip": False})).params == c.params
