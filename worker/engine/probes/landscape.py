"""Loss landscape, gradient predictiveness and effective beta-smoothness (paper Fig 4, 10, 11).

At step t, along the gradient direction, for every eta in S = multipliers x LR:
    l(eta) = L(w_t - eta g_t)                          the loss band is [min l, max l]
    d(eta) = ||grad L(w_t - eta g_t) - g_t||_2         gradient predictiveness band
    beta_t = max_eta d(eta) / (eta ||g_t||_2)          effective beta-smoothness
Each eta costs one forward and one backward pass, so one measurement costs K = |S| passes; the
K losses and distances stay on the device until one host sync at the end.
"""

from __future__ import annotations

import math

import torch

from worker.engine.probes.base import Probe, ProbeContext, ProbeOutput, global_norm_t
from worker.engine.sink import EtaRecord


class LandscapeProbe(Probe):
    name = "landscape"

    def __init__(self, every: int, multipliers: list[float]) -> None:
        super().__init__(every)
        self.multipliers = list(multipliers)

    def measure(self, ctx: ProbeContext) -> ProbeOutput:
        g = [ctx.grads[n] for n in ctx.names]
        etas = [m * ctx.lr for m in self.multipliers]
        # Every pass's loss and distance stays on the device; one host sync at the end.
        values = [global_norm_t(g)]
        for eta in etas:
            loss, grads = ctx.loss_and_grad_along(eta)  # at w_t - eta g_t
            torch._foreach_sub_(grads, g)  # fresh tensors: subtract in place
            values += [loss.double(), global_norm_t(grads)]
        g_norm, *flat = torch.stack(values).tolist()
        records = [
            EtaRecord(multiplier=m, eta=eta, loss=flat[2 * i], grad_dist=flat[2 * i + 1])
            for i, (m, eta) in enumerate(zip(self.multipliers, etas, strict=True))
        ]
        losses = [r.loss for r in records]
        dists = [r.grad_dist for r in records]
        betas = [r.grad_dist / (r.eta * g_norm) if g_norm > 0 else math.nan for r in records]
        return ProbeOutput(
            scalars={
                "landscape/loss_min": _nanmin(losses),
                "landscape/loss_max": _nanmax(losses),
                "landscape/grad_dist_min": _nanmin(dists),
                "landscape/grad_dist_max": _nanmax(dists),
                "landscape/beta": _nanmax(betas),
            },
            eta_records=records,
        )


def _nanmin(xs: list[float]) -> float:
    """min over the values; NaN if any is NaN (a band that touches NaN is not a band)."""
    return math.nan if any(math.isnan(x) for x in xs) else min(xs)


def _nanmax(xs: list[float]) -> float:
    return math.nan if any(math.isnan(x) for x in xs) else max(xs)
