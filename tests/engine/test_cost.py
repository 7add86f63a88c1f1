"""server/cost.py's estimates against the engine itself: the parameter count of the model the
engine builds, layer outputs counted by forward hooks on a real batch, the tensors autograd
really keeps for backward, the datasets' shapes and bytes, and the trainer's evaluations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from server.cost import ACTIVATION_FACTOR, MB, data_shape, dataset_bytes, estimate, train_batch
from server.spec import NORMS, RunSpec
from tests.engine.test_data import write_fake_cifar
from worker.engine.data import load_dataset
from worker.engine.losses import LOSSES
from worker.engine.models import Net, build_model
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer

NO_PROBES = {k: {"every": 0} for k in
             ("landscape", "ics", "activations", "sharpness", "grad_norm", "distance")}

# Every model family on every input shape it takes, at sizes a CPU builds in milliseconds.
SHAPES = {
    "mlp-mnist1d": {"model": "mlp", "width": 24, "depth": 5, "dataset": "mnist1d",
                    "batch_size": 32},
    "mlp-digits": {"model": "mlp", "width": 16, "depth": 3, "dataset": "digits",
                   "batch_size": 10_000},  # larger than the set: the whole set, 1438 rows
    "mlp-cifar10": {"model": "mlp", "width": 32, "depth": 2, "dataset": "cifar10",
                    "batch_size": 4},
    "mlp-one-layer": {"model": "mlp", "width": 8, "depth": 1, "dataset": "mnist1d",
                      "batch_size": 8},
    "dln-gaussian": {"model": "dln", "width": 16, "depth": 7, "dataset": "gaussian_linear",
                     "n_samples": 50, "input_dim": 12, "loss": "sum_squares",
                     "batch_size": None},
    "vgg11-digits": {"model": "vgg", "vgg_config": 11, "width": 0.125, "dataset": "digits",
                     "batch_size": 16},  # 8x8 images: pools past 1x1 are skipped
    "vgg11-digits32": {"model": "vgg", "vgg_config": 11, "width": 0.125, "dataset": "digits",
                       "dataset_options": {"size": 32}, "batch_size": 4},  # no pool skipped
    "vgg16-digits": {"model": "vgg", "vgg_config": 16, "width": 0.125, "dataset": "digits",
                     "batch_size": 8},
    "vgg16-cifar10": {"model": "vgg", "vgg_config": 16, "width": 0.25, "dataset": "cifar10",
                      "batch_size": 2},
}


def spec_for(shape: str, norm: str, **over) -> RunSpec:
    return RunSpec.model_validate(
        {"norm_groups": 2, **SHAPES[shape], "norm": norm, "probes": NO_PROBES, **over})


def engine_model(spec: RunSpec) -> Net:
    s = data_shape(spec)
    return build_model(spec, s.in_shape, s.n_outputs, torch.Generator().manual_seed(0))


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_params_are_the_engines_exact_count(shape, norm):
    spec = spec_for(shape, norm)
    assert estimate(spec).params == n_params(engine_model(spec))


@pytest.mark.parametrize("fields", [
    {"model": "vgg", "vgg_config": 16, "width": 1.0, "dataset": "cifar10"},  # the paper's
    {"model": "vgg", "vgg_config": 11, "width": 0.3, "dataset": "cifar10"},  # rounded widths
    {"model": "mlp", "width": 300, "depth": 9, "dataset": "digits"},
    {"model": "dln", "width": 10, "depth": 25, "dataset": "gaussian_linear", "input_dim": 10,
     "loss": "sum_squares"},
])
@pytest.mark.parametrize("norm", ["none", "batch", "noise", "group"])
def test_params_at_full_and_odd_sizes(fields, norm):
    spec = RunSpec.model_validate({**fields, "norm": norm, "norm_groups": 1})
    assert estimate(spec).params == n_params(engine_model(spec))


def saved_for_backward(spec: RunSpec, net: Net, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for backward in one training forward and
    its loss, the parameters and the input batch left out (they are counted elsewhere)."""
    skip = {p.untyped_storage().data_ptr() for p in net.parameters()}
    skip.add(x.untyped_storage().data_ptr())
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    s = data_shape(spec)
    y = (torch.randn(len(x), s.n_outputs) if spec.loss == "sum_squares"
         else torch.randint(0, s.n_outputs, (len(x),)))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        LOSSES[spec.loss](net(x), y)
    return sum(kept.values())


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_activations_are_the_layer_outputs_of_a_real_batch(shape, norm):
    spec = spec_for(shape, norm)
    net = engine_model(spec).train()
    x = torch.randn(train_batch(spec), *data_shape(spec).in_shape)
    counted = [0]

    def count(_m, _inputs, out):
        counted[0] += out.numel()

    # Flatten is a view and Identity returns its input: neither makes a new tensor.
    handles = [m.register_forward_hook(count) for m in net.body
               if not isinstance(m, nn.Flatten | nn.Identity)]
    saved = saved_for_backward(spec, net, x)
    for h in handles:
        h.remove()
    c = estimate(spec)
    assert c.activation_elements == counted[0]
    # The bytes bound what autograd keeps (ACTIVATION_FACTOR covers the Lp and noise layers'
    # intermediates) and are not absurdly over: outputs autograd does not keep, such as a
    # linear layer's when the ReLU after it keeps its own, are counted anyway.
    estimated = c.activation_mb * MB
    assert saved <= estimated <= 8 * saved
    assert estimated == 4 * counted[0] * ACTIVATION_FACTOR


def test_bf16_halves_all_but_the_norm_outputs_and_probes_multiply():
    plain = spec_for("vgg11-digits", "batch")
    half = estimate(spec_for("vgg11-digits", "batch", bf16=True)).activation_mb
    assert estimate(plain).activation_mb / 2 < half < estimate(plain).activation_mb
    none = spec_for("vgg11-digits", "none")
    assert estimate(none.model_copy(update={"bf16": True})).activation_mb == pytest.approx(
        estimate(none).activation_mb / 2)
    batched = RunSpec.model_validate({**plain.model_dump(), "probes": {"landscape": {
        "every": 1, "batched": True, "multipliers": [1, 2, 3]}}})
    assert estimate(batched).activation_mb == pytest.approx(3 * estimate(plain).activation_mb)
    # Weights, gradients and the probes' copies: state grows with the parameters.
    assert estimate(batched).memory_mb - estimate(batched).activation_mb > \
        estimate(plain).memory_mb - estimate(plain).activation_mb


@pytest.mark.parametrize("dataset,fields", [
    ("digits", {}),
    ("digits", {"dataset_options": {"size": 32}}),
    ("mnist1d", {}),
    ("gaussian_linear", {"n_samples": 300, "input_dim": 7, "loss": "sum_squares"}),
])
def test_dataset_shapes_and_bytes_are_the_loaders(tmp_path, dataset, fields):
    spec = RunSpec.model_validate({"dataset": dataset, **fields})
    d = load_dataset(spec, tmp_path)
    s = data_shape(spec)
    assert (s.in_shape, s.n_outputs, s.n_train, s.n_test) == (
        d.in_shape, d.n_outputs, d.n_train, len(d.x_test))
    held = sum(t.nbytes for t in (d.x_train, d.y_train, d.x_test, d.y_test))
    matrix = 4 * spec.input_dim**2 if dataset == "gaussian_linear" else 0  # A, while drawn
    assert dataset_bytes(spec) == held + matrix


def test_cifar10_rows_are_the_loaders(tmp_path):
    """The real archive is not at hand: a small one in its format gives the per-row sizes."""
    write_fake_cifar(tmp_path)
    d = load_dataset(RunSpec(dataset="cifar10"), tmp_path)
    s = data_shape(RunSpec(dataset="cifar10"))
    assert (s.in_shape, s.n_outputs) == (d.in_shape, d.n_outputs)
    per_row = (d.x_train.nbytes + d.y_train.nbytes) // d.n_train
    assert dataset_bytes(RunSpec(dataset="cifar10")) == (s.n_train + s.n_test) * per_row
    assert (s.n_train, s.n_test) == (50_000, 10_000)  # the archive's, load_cifar10's docstring


@pytest.mark.parametrize("steps,every", [(7, 3), (6, 3), (5, 0)])
def test_evaluations_counted_as_the_trainer_makes_them(tmp_path, steps, every):
    spec = spec_for("mlp-digits", "none", steps=steps, eval_every=every, batch_size=32)
    sink = MemorySink()
    Trainer(spec, tmp_path).run(sink)
    evals = len(sink.steps("test/loss"))
    assert evals == (math.ceil(steps / every) + 1 if every else 0)
    per_eval = data_shape(spec).n_test / 3 / 32
    assert estimate(spec).cost_steps == pytest.approx(steps + evals * per_eval)
