"""Cheap scalars from quantities the step already has: gradient norm and distance from init."""

from __future__ import annotations

import torch

from worker.engine.probes.base import Params, Probe, ProbeContext, ProbeOutput, global_norm


class GradNormProbe(Probe):
    name = "grad_norm"

    def measure(self, ctx: ProbeContext) -> ProbeOutput:
        return ProbeOutput(scalars={"grad/norm": global_norm(ctx.grads.values())})


class DistanceProbe(Probe):
    """||w_t - w_0||_2 over all trainable parameters."""

    name = "distance"

    def __init__(self, every: int, init_params: Params) -> None:
        super().__init__(every)
        self.init = {n: t.detach().clone() for n, t in init_params.items()}

    def measure(self, ctx: ProbeContext) -> ProbeOutput:
        names = list(ctx.params)
        diff = torch._foreach_sub([ctx.params[n] for n in names], [self.init[n] for n in names])
        return ProbeOutput(scalars={"dist/init": global_norm(diff)})
