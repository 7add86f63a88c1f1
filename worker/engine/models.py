"""The engine's models: CIFAR-style VGG, the deep linear network (DLN) and an MLP
(paper-protocol.md, "Models").

Every model is one `nn.Sequential` in forward order (so `named_parameters()` is in forward order)
wrapped in a `Net` that names the places the probes need:

- `weight_layers`: the conv/linear layers; weight layer i (from 1, at the input) is
  `weight_layers[i - 1]`, the numbering of the ICS probe (Definition 2.1).
- `norm_slots`: the module right after every weight layer but the last, always present
  (`nn.Identity` for norm "none") so hooks have a stable place; its output is the normalisation's
  output (after any noise), before the nonlinearity: the activations of the paper's figures.

Initialisation is Glorot-uniform weights and zero biases (App. A.1), drawn from a generator
seeded with `spec.seed` and never from the global torch RNG, so the same spec gives bitwise
identical weights and building a model does not perturb anything else seeded globally.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from server.spec import VGG_CONFIGS, RunSpec
from worker.engine.norms import Kind, make_norm


class Net(nn.Module):
    """A model as the engine and its probes see it: a forward-ordered body plus named positions.

    `info` holds build facts a figure may need to state (for VGG: skipped pools, final spatial
    size). `noise_generator` is the generator the noisy norm layers draw from: a probe saves and
    restores its state so that probing leaves the training trajectory unchanged.
    """

    def __init__(
        self,
        body: nn.Sequential,
        weight_idx: list[int],
        slot_idx: list[int],
        noise_generator: torch.Generator,
        info: dict[str, Any],
    ) -> None:
        super().__init__()
        if len(slot_idx) != max(0, len(weight_idx) - 1):
            raise ValueError("a Net needs one norm slot after every weight layer but the last")
        self.body = body
        self._weight_idx = list(weight_idx)
        self._slot_idx = list(slot_idx)
        self.noise_generator = noise_generator
        self.info = info

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    @property
    def weight_layers(self) -> list[nn.Module]:
        """Conv/linear layers in forward order (computed, so they are never registered twice)."""
        return [self.body[k] for k in self._weight_idx]

    @property
    def norm_slots(self) -> list[nn.Module]:
        """The module after each weight layer but the last, in forward order."""
        return [self.body[k] for k in self._slot_idx]

    def param_layer_index(self) -> dict[str, int]:
        """Every parameter name -> the 1-based weight layer it belongs to or follows.

        A weight layer's weight and bias map to its index i; the parameters of the norm after
        weight layer i map to i. The ICS probe reads "every earlier layer" as j < i from this.
        """
        owner = {k: i for i, k in enumerate(self._weight_idx, start=1)}
        owner.update({k: i for i, k in enumerate(self._slot_idx, start=1)})
        index: dict[str, int] = {}
        for name, _ in self.named_parameters():
            k = int(name.split(".")[1])  # names are "body.<position>.<...>"
            if k not in owner:
                raise RuntimeError(f"parameter {name} is outside weight layers and norm slots")
            index[name] = owner[k]
        return index


def build_model(
    spec: RunSpec, in_shape: tuple[int, ...], n_outputs: int, noise_generator: torch.Generator
) -> Net:
    """The model `spec.model` for inputs of shape `in_shape` (no batch dim) and `n_outputs` outputs.

    Built on CPU; the caller moves it to the run's device. `noise_generator` must already live on
    that device (it feeds the noisy norm layers during training forwards).
    """
    from worker.engine.resnet import build_resnet  # a Net look-alike: its blocks branch

    builders = {"vgg": _vgg, "dln": _dln, "mlp": _mlp, "resnet": build_resnet}
    if spec.plugin_model:  # an installed entry point of that name (worker/engine/plugins.py)
        from worker.engine.plugins import build_plugin_model

        return build_plugin_model(spec, in_shape, n_outputs, noise_generator)
    return builders[spec.model](spec, in_shape, n_outputs, noise_generator)


class _Builder:
    """Accumulates the body in forward order, recording weight-layer and norm-slot positions."""

    def __init__(self, spec: RunSpec, noise_generator: torch.Generator) -> None:
        self.spec = spec
        self.noise_generator = noise_generator
        self.init_generator = torch.Generator().manual_seed(spec.seed)
        self.layers: list[nn.Module] = []
        self.weight_idx: list[int] = []
        self.slot_idx: list[int] = []

    def add(self, module: nn.Module) -> None:
        self.layers.append(module)

    def weight(self, module: nn.Conv2d | nn.Linear) -> None:
        """Append a weight layer with Glorot-uniform weight and zero bias, from the seed."""
        nn.init.xavier_uniform_(module.weight, generator=self.init_generator)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        self.weight_idx.append(len(self.layers))
        self.add(module)

    def norm(self, num_features: int, kind: Kind) -> None:
        self.slot_idx.append(len(self.layers))
        self.add(make_norm(self.spec.norm, num_features, kind, self.spec, self.noise_generator))

    def net(self, info: dict[str, Any]) -> Net:
        body = nn.Sequential(*self.layers)
        return Net(body, self.weight_idx, self.slot_idx, self.noise_generator, info)


def _linear(n_in: int, n_out: int, bias: bool) -> nn.Linear:
    # skip_init builds without torch's default init, which would consume the global RNG.
    return torch.nn.utils.skip_init(nn.Linear, n_in, n_out, bias=bias)


def _vgg(
    spec: RunSpec, in_shape: tuple[int, ...], n_outputs: int, noise_generator: torch.Generator
) -> Net:
    """CIFAR VGG: [3x3 conv (pad 1) -> norm -> ReLU] per int, 2x2 max-pool per "M", then Linear.

    A pool is skipped (recorded in `info["skipped_pools"]` as its position in the config) when
    the feature map is already below 2x2, so small images such as 8x8 digits still fit; on 32x32
    CIFAR no pool is skipped, the final map is 1x1 and the classifier is Linear(512*width, 10).
    """
    if len(in_shape) != 3:
        raise ValueError(f"vgg needs (C, H, W) inputs, got in_shape={in_shape}")
    b = _Builder(spec, noise_generator)
    channels, h, w = in_shape
    widths = iter(spec.layer_widths())
    skipped: list[int] = []
    for pos, c in enumerate(VGG_CONFIGS[spec.vgg_config]):
        if c == "M":
            if h >= 2 and w >= 2:
                b.add(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            else:
                skipped.append(pos)
            continue
        out = next(widths)
        conv = torch.nn.utils.skip_init(nn.Conv2d, channels, out, 3, padding=1, bias=True)
        b.weight(conv)
        b.norm(out, "conv")
        b.add(nn.ReLU())  # not in-place: a hook's copy of the norm output must stay intact
        channels = out
    b.add(nn.Flatten())
    b.weight(_linear(channels * h * w, n_outputs, bias=True))
    return b.net({"skipped_pools": skipped, "final_spatial": (h, w)})


def _dln(
    spec: RunSpec, in_shape: tuple[int, ...], n_outputs: int, noise_generator: torch.Generator
) -> Net:
    """Deep linear network: spec.depth bias-free linear layers, no nonlinearity, a norm slot
    after every layer but the last (paper App. A.1: 25 square 10x10 layers)."""
    if len(in_shape) != 1:
        raise ValueError(f"dln needs flat (D,) inputs, got in_shape={in_shape}")
    b = _Builder(spec, noise_generator)
    sizes = [in_shape[0]] + [int(spec.width)] * (spec.depth - 1) + [n_outputs]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        b.weight(_linear(n_in, n_out, bias=False))
        if i < spec.depth - 1:
            b.norm(n_out, "linear")
    return b.net({})


def _mlp(
    spec: RunSpec, in_shape: tuple[int, ...], n_outputs: int, noise_generator: torch.Generator
) -> Net:
    """MLP: spec.depth linear layers with bias, [norm -> ReLU] after every layer but the last.

    Inputs of any shape are flattened first, so the MLP also takes images.
    """
    b = _Builder(spec, noise_generator)
    b.add(nn.Flatten())
    sizes = [math.prod(in_shape)] + [int(spec.width)] * (spec.depth - 1) + [n_outputs]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        b.weight(_linear(n_in, n_out, bias=True))
        if i < spec.depth - 1:
            b.norm(n_out, "linear")
            b.add(nn.ReLU())  # not in-place, as in VGG
    return b.net({})
