"""Filter-normalised random directions (Li et al. 2018) with explicit ignored parameters.

A direction is a dict name -> Tensor shaped like the parameters. Two choices the reference code
(tomgoldstein/loss-landscape, net_plotter.py) leaves implicit are made explicit here:

- Shared raw directions. The Gaussian of each parameter comes from its own CPU generator seeded
  with derive_seed(seed, "direction", label, name): it depends on the seed, the direction's
  label and the parameter's name and shape, never on the other parameters nor on their order.
  So runs of one architecture get identical directions, and a run with BatchNorm shares the raw
  direction of every parameter whose name it shares with a run without (the norm's own
  parameters come on top). Drawn in float32 on the CPU whatever the network's device and dtype,
  so a direction is the same on every worker, then cast to the parameter's dtype and device.
- Ignored parameters. Parameters of dim <= 1 (biases, norm gamma and beta) are zeroed by
  default, as Li et al. do; `keep_1d` keeps them, each scaled as a whole to theta's norm.

`orthogonalize` is a plain Gram-Schmidt projection; it does not filter-normalise again, so the
second direction of a surface is exactly orthogonal to the first and its filters keep their
normalised norms only approximately (two random Gaussians in 10^5+ dimensions are already nearly
orthogonal, so the projection removes a tiny part).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from worker.engine.geometry.flat import dot_t
from worker.engine.state import derive_seed

Direction = dict[str, Tensor]


def raw_direction(params: Mapping[str, Tensor], seed: int, label: str = "d1") -> Direction:
    """N(0, 1) per parameter, keyed by (seed, label, parameter name): no normalisation."""
    out: Direction = {}
    for name, p in params.items():
        g = torch.Generator().manual_seed(derive_seed(seed, "direction", label, name))
        d = torch.randn(tuple(p.shape), generator=g, dtype=torch.float32)
        out[name] = d.to(device=p.device, dtype=p.dtype)
    return out


def random_direction(
    params: Mapping[str, Tensor], seed: int, label: str = "d1", *, keep_1d: bool = False
) -> Direction:
    """A filter-normalised Gaussian direction at theta = `params` (see the module docstring)."""
    return filter_normalize(raw_direction(params, seed, label), params, keep_1d=keep_1d)


def filter_normalize(
    d: Mapping[str, Tensor], params: Mapping[str, Tensor], *, keep_1d: bool = False
) -> Direction:
    """Each output filter/neuron (slice along dim 0) of d rescaled to the norm of the same slice
    of theta, for parameters of dim > 1; dim <= 1 parameters zeroed unless `keep_1d` (then each
    scaled as a whole to theta's norm). A zero filter of d stays zero (it has no direction to
    rescale). Norms and scales are computed in float64, the result cast back to d's dtype.
    """
    out: Direction = {}
    for name, t in params.items():
        dn = d[name].detach()
        if dn.dim() <= 1 and not keep_1d:
            out[name] = torch.zeros_like(dn)
            continue
        rows = 1 if dn.dim() <= 1 else dn.shape[0]
        d64 = dn.double().reshape(rows, -1)
        d_norm = torch.linalg.vector_norm(d64, dim=1, keepdim=True)
        t_norm = torch.linalg.vector_norm(t.detach().double().reshape(rows, -1), dim=1,
                                          keepdim=True)
        scale = torch.where(d_norm > 0, t_norm / d_norm.clamp_min(1e-300), 0.0)
        out[name] = (d64 * scale).reshape(dn.shape).to(dn.dtype)
    return out


def orthogonalize(d2: Mapping[str, Tensor], d1: Mapping[str, Tensor]) -> Direction:
    """d2 - (<d2, d1> / <d1, d1>) d1 over the flat vectors (float64 coefficients and
    arithmetic, cast back to d2's dtypes); d2 unchanged (a copy) when d1 is zero."""
    d11 = dot_t(d1, d1)
    if float(d11) == 0.0:
        return {n: t.detach().clone() for n, t in d2.items()}
    c = dot_t(d2, d1) / d11
    return {n: (t.detach().double() - c * d1[n].detach().double()).to(t.dtype)
            for n, t in d2.items()}
