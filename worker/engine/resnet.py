"""CIFAR-style ResNets (He et al. 2016, section 4.2), with and without skip connections.

ResNet-(6n+2), n = 3, 5, 9 for depths 20, 32, 56: a 3x3 stem convolution to 16 channels, three
stages of n basic blocks at 16, 32 and 64 channels (the first block of stages 2 and 3 halves
the map with a stride-2 convolution), global average pooling and one linear classifier.
A basic block is conv3x3 -> norm -> ReLU -> conv3x3 -> norm, plus the shortcut, then ReLU.
`skip=False` is the same network without the shortcuts: Li et al. 2018's "noshort" nets.

Choices, and why:

- Shortcuts are option A (He et al.'s choice for CIFAR): the identity, and where a stage
  starts, the input subsampled by 2 with zero channels appended. They have no parameters, so
  the skip and noshort nets of one depth have the same parameters under the same names. That
  is what makes Li et al.'s comparison clean here: the engine keys a random direction by
  parameter name (geometry/directions.py), so both nets are cut along identical directions,
  and the parameter count is He et al.'s (ResNet-20 with BN: 0.27M). A 1x1 projection
  (option B, the loss-landscape repository's) would be a parallel weight layer, leaving
  "weight layer i" and ICS's "every earlier layer" ambiguous; option A keeps one chain.
- Convolutions have a bias only where the norm after them has no learnable shift ("none",
  "noise": server.spec.SHIFT_FREE_NORMS). Elsewhere the norm's beta plays that part, as in
  He et al.; a no-norm net without any bias would confound "no BatchNorm" with "no biases".
- Initialisation is the engine's (models.py): Glorot-uniform weights and zero biases from a
  generator seeded with spec.seed, drawn in forward order; the global RNG is never touched.
- Norm slots are the norm after every convolution (the last convolution of a block included:
  its slot is the norm's output before the shortcut is added and before the ReLU), so there
  is one slot after every weight layer but the classifier, as the engine's `Net` promises.

The network exposes what `Net` does (weight_layers, norm_slots, param_layer_index,
noise_generator, info), so every probe and analysis runs on it unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from server.spec import RESNET_WIDTHS, SHIFT_FREE_NORMS, RunSpec
from worker.engine.norms import make_norm


class PadShortcut(nn.Module):
    """Option A shortcut where a stage starts: subsample by `stride`, append zero channels."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        # F.pad (not cat with fresh zeros) so that torch.func.vmap batches it.
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C): the mean over the map. A plain mean, unlike AdaptiveAvgPool2d,
    has a torch.func.vmap batching rule (the batched landscape probe and surfaces use vmap)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class BasicBlock(nn.Module):
    """conv -> norm -> ReLU -> conv -> norm, (+ shortcut), ReLU. Modules are registered in
    forward order, so named_parameters() runs from input to output."""

    def __init__(
        self, conv1: nn.Conv2d, norm1: nn.Module, conv2: nn.Conv2d, norm2: nn.Module,
        shortcut: nn.Module | None,
    ) -> None:
        super().__init__()
        self.conv1, self.norm1, self.relu1 = conv1, norm1, nn.ReLU()
        self.conv2, self.norm2 = conv2, norm2
        self.shortcut = shortcut  # None: no skip connection
        self.relu2 = nn.ReLU()  # not in-place: a hook's copy of the norm output must stay intact

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm2(self.conv2(self.relu1(self.norm1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu2(out)


class ResNet(nn.Module):
    """The engine's ResNet; see the module docstring. Parameter names are stable across norms
    and skip: `conv`, `norm`, `stage{1,2,3}.{block}.conv{1,2}` / `.norm{1,2}`, `fc`."""

    def __init__(
        self, spec: RunSpec, in_shape: tuple[int, ...], n_outputs: int,
        noise_generator: torch.Generator,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"resnet needs (C, H, W) inputs, got in_shape={in_shape}")
        if (spec.resnet_depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n+2, got {spec.resnet_depth}")
        self.noise_generator = noise_generator
        self._spec = spec
        self._init = torch.Generator().manual_seed(spec.seed)
        self._weights: list[nn.Module] = []
        self._slots: list[nn.Module] = []
        blocks = (spec.resnet_depth - 2) // 6
        channels, h, w = in_shape

        self.conv = self._conv(channels, RESNET_WIDTHS[0], stride=1)
        self.norm = self._norm(RESNET_WIDTHS[0])
        self.relu = nn.ReLU()
        channels = RESNET_WIDTHS[0]
        for s, width in enumerate(RESNET_WIDTHS, start=1):
            stage = []
            for b in range(blocks):
                stride = 2 if s > 1 and b == 0 else 1
                conv1 = self._conv(channels, width, stride)
                norm1 = self._norm(width)
                conv2 = self._conv(width, width, 1)
                norm2 = self._norm(width)
                shortcut = None
                if spec.skip:
                    shortcut = (PadShortcut(stride, width - channels)
                                if stride != 1 or width != channels else nn.Identity())
                stage.append(BasicBlock(conv1, norm1, conv2, norm2, shortcut))
                h, w = (h - 1) // stride + 1, (w - 1) // stride + 1  # 3x3, padding 1
                channels = width
            setattr(self, f"stage{s}", nn.Sequential(*stage))
        self.pool = GlobalAvgPool()
        self.fc = torch.nn.utils.skip_init(nn.Linear, channels, n_outputs, bias=True)
        self._glorot(self.fc)
        self.info: dict[str, Any] = {
            "depth": spec.resnet_depth, "blocks_per_stage": blocks, "skip": spec.skip,
            "shortcut": "option A: identity, zero-padded channels" if spec.skip else None,
            "final_spatial": (h, w),
        }
        del self._init, self._spec  # build-time only; a deep copy need not carry them

    # -- building -------------------------------------------------------------------------

    def _glorot(self, layer: nn.Conv2d | nn.Linear) -> None:
        nn.init.xavier_uniform_(layer.weight, generator=self._init)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        self._weights.append(layer)

    def _conv(self, c_in: int, c_out: int, stride: int) -> nn.Conv2d:
        # skip_init: torch's default init would draw from the global RNG.
        conv = torch.nn.utils.skip_init(
            nn.Conv2d, c_in, c_out, 3, stride=stride, padding=1,
            bias=self._spec.norm in SHIFT_FREE_NORMS,
        )
        self._glorot(conv)
        return conv

    def _norm(self, channels: int) -> nn.Module:
        norm = make_norm(self._spec.norm, channels, "conv", self._spec, self.noise_generator)
        self._slots.append(norm)
        return norm

    # -- what the engine's Net promises -----------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.norm(self.conv(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(x))

    @property
    def weight_layers(self) -> list[nn.Module]:
        """The convolutions and the classifier, in forward order."""
        return list(self._weights)

    @property
    def norm_slots(self) -> list[nn.Module]:
        """The norm after every convolution (nn.Identity for "none"), in forward order."""
        return list(self._slots)

    def param_layer_index(self) -> dict[str, int]:
        """Every parameter name -> the 1-based weight layer it belongs to or follows."""
        owner: dict[int, int] = {}
        for i, module in enumerate(self._weights, start=1):
            owner.update({id(p): i for p in module.parameters()})
        for i, module in enumerate(self._slots, start=1):
            owner.update({id(p): i for p in module.parameters()})
        index: dict[str, int] = {}
        for name, p in self.named_parameters():
            if id(p) not in owner:
                raise RuntimeError(f"parameter {name} is outside weight layers and norm slots")
            index[name] = owner[id(p)]
        return index


def build_resnet(
    spec: RunSpec, in_shape: tuple[int, ...], n_outputs: int, noise_generator: torch.Generator
) -> ResNet:
    return ResNet(spec, in_shape, n_outputs, noise_generator)
