"""Normalisation layers of the engine, one per `server.spec.NORMS` name (paper-protocol.md,
"Normalisations").

Every layer here sits in a model's norm slot: right after a weight layer, before the nonlinearity.
Modules with an affine part start at gamma = 1, beta = 0 (torch's defaults, and the protocol's).

Randomness: the noise of Algorithm 1 (noisy BatchNorm) is drawn only from the generator passed to
`make_norm`, never from the global torch RNG, so that a run is reproducible from its seed and a
probe can save and restore that one generator to leave the training trajectory untouched.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from server.spec import NoiseSpec, RunSpec

Kind = Literal["conv", "linear"]

_LP_ORDERS: dict[str, float] = {"l1": 1.0, "l2": 2.0, "linf": math.inf}


def _unit_view(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-unit vector (C,) to broadcast against (N, C) or (N, C, H, W)."""
    return v.view(1, -1, *([1] * (like.dim() - 2)))


class NoiseInjection(nn.Module):
    """Algorithm 1 of the paper: a non-stationary random scale and shift of every activation.

    At every training forward, per unit j: mu_j ~ U(-r, r), sigma_j ~ U(scale_low, scale_high);
    then per element (sample i, and every H, W position for conv): m_ij ~ U(mu_j - jitter,
    mu_j + jitter), s_ij ~ N(sigma_j, scale_std) (a standard deviation); out = s_ij * a_ij + m_ij.
    The draws are in this fixed order (mu, sigma, m, s) so the noise is a pure function of the
    generator's state. The noise is a constant for autograd: gradients flow through `a` only.
    In eval mode the layer is the identity (the paper injects noise during training only).

    `generator` must live on the device of the activations (torch draws on the generator's device).
    """

    def __init__(self, num_features: int, noise: NoiseSpec, generator: torch.Generator) -> None:
        super().__init__()
        self.num_features = num_features
        self.noise = noise
        self.generator = generator

    def forward(self, a: Tensor) -> Tensor:
        if not self.training:
            return a
        if a.shape[1] != self.num_features:
            raise ValueError(
                f"expected {self.num_features} units in dim 1, got shape {tuple(a.shape)}"
            )
        if self.generator.device != a.device:
            raise RuntimeError(
                f"noise generator is on {self.generator.device} but activations are on {a.device}; "
                "build the model with a generator on the device it will run on"
            )
        nz, g = self.noise, self.generator
        opts = {"generator": g, "device": a.device, "dtype": a.dtype}
        c = self.num_features
        mu = (2 * torch.rand(c, **opts) - 1) * nz.mean_range
        sigma = nz.scale_low + (nz.scale_high - nz.scale_low) * torch.rand(c, **opts)
        m = _unit_view(mu, a) + (2 * torch.rand(a.shape, **opts) - 1) * nz.mean_jitter
        s = _unit_view(sigma, a) + nz.scale_std * torch.randn(a.shape, **opts)
        return a * s + m

    def extra_repr(self) -> str:
        return f"{self.num_features}, {self.noise!r}"


class LpNorm(nn.Module):
    """Lp batch normalisation (paper section 3.3): BN with the variance replaced by an Lp mean.

    Per unit j, over the batch (and H, W for conv): centre by the batch mean, and divide by the
    power mean of the UN-centred activations, ((1/m) sum |a|^p)^(1/p), or max |a| for p = inf;
    out = gamma * (a - mean) / (denom + eps) + beta, with learnable per-unit `weight` (gamma, 1 at
    init) and `bias` (beta, 0 at init), named like BatchNorm's.

    There are no running statistics: eval mode normalises with the current batch's statistics
    too, exactly as in training (the protocol's choice; the paper defines no inference rule).
    The whole computation is differentiable, including through the mean and the denominator.
    """

    def __init__(self, num_features: int, p: float, eps: float, kind: Kind) -> None:
        super().__init__()
        if not (p >= 1):
            raise ValueError(f"p must be >= 1 (or inf), got {p}")
        self.num_features = num_features
        self.p = p
        self.eps = eps
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, a: Tensor) -> Tensor:
        want = 4 if self.kind == "conv" else 2
        if a.dim() != want or a.shape[1] != self.num_features:
            raise ValueError(
                f"{self.kind} LpNorm({self.num_features}) expects a {want}-d input with "
                f"{self.num_features} units in dim 1, got shape {tuple(a.shape)}"
            )
        dims = [d for d in range(a.dim()) if d != 1]
        mean = a.mean(dim=dims, keepdim=True)
        if math.isinf(self.p):
            denom = a.abs().amax(dim=dims, keepdim=True)
        else:
            denom = a.abs().pow(self.p).mean(dim=dims, keepdim=True).pow(1.0 / self.p)
        out = (a - mean) / (denom + self.eps)
        return out * _unit_view(self.weight, a) + _unit_view(self.bias, a)

    def extra_repr(self) -> str:
        return f"{self.num_features}, p={self.p}, eps={self.eps}, kind={self.kind}"


def make_norm(
    name: str, num_features: int, kind: Kind, spec: RunSpec, noise_generator: torch.Generator
) -> nn.Module:
    """The normalisation module `name` (one of `server.spec.NORMS`) for `num_features` units.

    kind: "conv" for (N, C, H, W) activations, "linear" for (N, C). `spec` supplies norm_eps,
    norm_groups and the noise parameters; `noise_generator` feeds the noisy layers only.
    """
    eps = spec.norm_eps
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return _batch_norm(num_features, kind, eps)
    if name == "noisy_batch":
        return nn.Sequential(
            _batch_norm(num_features, kind, eps),
            NoiseInjection(num_features, spec.noise, noise_generator),
        )
    if name == "noise":
        # The paper's control: the same noise without BatchNorm (it does not train).
        return NoiseInjection(num_features, spec.noise, noise_generator)
    if name in _LP_ORDERS:
        return LpNorm(num_features, _LP_ORDERS[name], eps, kind)
    if name == "layer":
        # One group over (C, H, W) is layer norm, with per-channel (not per-element) affine.
        if kind == "conv":
            return nn.GroupNorm(1, num_features, eps=eps)
        return nn.LayerNorm(num_features, eps=eps)
    if name == "group":
        if num_features % spec.norm_groups:
            raise ValueError(
                f"group norm: norm_groups={spec.norm_groups} does not divide {num_features} units"
            )
        return nn.GroupNorm(spec.norm_groups, num_features, eps=eps)
    raise ValueError(f"unknown norm {name!r}")


def _batch_norm(num_features: int, kind: Kind, eps: float) -> nn.Module:
    """torch BatchNorm (affine, momentum 0.1, running statistics) for the activation kind."""
    cls = nn.BatchNorm2d if kind == "conv" else nn.BatchNorm1d
    return cls(num_features, eps=eps)
