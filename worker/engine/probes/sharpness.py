"""Sharpness: the top Hessian eigenvalue of L on B_t (beyond the paper; Cohen et al. 2021).

Power iteration on Hessian-vector products (double backward through the same train-mode
forward the other probes use). Gradient descent on a quadratic is stable only while this
stays under 2/LR, the "edge of stability" line the dashboard draws next to it.
"""

from __future__ import annotations

import math

import torch

from worker.engine.probes.base import Probe, ProbeContext, ProbeOutput, global_norm
from worker.engine.state import derive_seed


class SharpnessProbe(Probe):
    name = "sharpness"

    def __init__(self, every: int, iters: int, seed: int) -> None:
        super().__init__(every)
        self.iters = iters
        self.seed = seed

    def measure(self, ctx: ProbeContext) -> ProbeOutput:
        leaves = [t.detach().requires_grad_(True) for t in ctx.params.values()]
        loss = ctx.differentiable_loss(dict(zip(ctx.params, leaves, strict=True)))
        grads = torch.autograd.grad(loss, leaves, create_graph=True)
        v = self._start_vector(leaves, ctx.step)
        eig = math.nan
        for _ in range(self.iters):
            hv = torch.autograd.grad(grads, leaves, grad_outputs=v, retain_graph=True)
            eig = float(sum((a * b).sum() for a, b in zip(v, hv, strict=True)))  # Rayleigh quotient
            norm = global_norm(hv)
            if not math.isfinite(norm) or norm == 0.0:
                break
            v = [h.detach() / norm for h in hv]
        return ProbeOutput(
            scalars={"sharpness/top_eig": eig, "sharpness/edge": 2.0 / ctx.lr}
        )

    def _start_vector(self, like: list[torch.Tensor], step: int) -> list[torch.Tensor]:
        """A unit random vector from a generator of its own: the global RNG is never touched."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "sharpness", step))
        v = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in like]
        norm = global_norm(v)
        return [x / norm for x in v]
