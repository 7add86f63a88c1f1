"""Parameter dicts as flat vectors: the one place that fixes the order.

Directions, snapshots and gradients are ordered dicts name -> Tensor in the order of
`net.named_parameters()`; the Hessian operators and the PCA work on flat 1-D vectors. Flattening
concatenates in dict order, so the same dict always gives the same vector. Inner products and
norms accumulate in float64 whatever the tensors' dtype: directions are compared and
orthogonalised across ~10^7 float32 entries, where a float32 sum would lose the digits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor


def flatten(tensors: Mapping[str, Tensor]) -> Tensor:
    """The tensors' entries concatenated in dict order (1-D; common dtype and device)."""
    if not tensors:
        return torch.zeros(0)
    return torch.cat([t.detach().reshape(-1) for t in tensors.values()])


def unflatten(vec: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`vec` cut into tensors shaped like `like`'s (views into `vec`, in `vec`'s dtype)."""
    sizes = [t.numel() for t in like.values()]
    if vec.dim() != 1 or vec.numel() != sum(sizes):
        raise ValueError(f"a vector of {sum(sizes)} entries is needed, got {tuple(vec.shape)}")
    parts = torch.split(vec, sizes)
    return {n: p.view(t.shape) for (n, t), p in zip(like.items(), parts, strict=True)}


def dot_t(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """<a, b> over every name of `a` (b must have them all), as a 0-dim float64 tensor."""
    total = torch.zeros((), dtype=torch.float64, device=_device(a))
    for n, t in a.items():
        total += torch.sum(t.detach().double() * b[n].detach().double())
    return total


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """<a, b> over every name of `a`, accumulated in float64."""
    return float(dot_t(a, b))


def norm(a: Mapping[str, Tensor]) -> float:
    """||a||_2 over all entries, accumulated in float64."""
    return math.sqrt(dot(a, a))


def _device(a: Mapping[str, Tensor]) -> torch.device:
    return next(iter(a.values())).device if a else torch.device("cpu")
