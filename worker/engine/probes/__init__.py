"""The probes: one small class per measured quantity, each with its own schedule.

`build_probes` turns a spec's `probes` section into probe objects wired to a built network.
"""

from __future__ import annotations

from server.spec import RunSpec
from worker.engine.probes.activations import ActivationsProbe
from worker.engine.probes.base import Params, Probe, ProbeContext, ProbeOutput
from worker.engine.probes.basic import DistanceProbe, GradNormProbe
from worker.engine.probes.ics import IcsProbe
from worker.engine.probes.landscape import LandscapeProbe
from worker.engine.probes.sharpness import SharpnessProbe

__all__ = ["Probe", "ProbeContext", "ProbeOutput", "build_probes"]


def build_probes(spec: RunSpec, net, init_params: Params) -> list[Probe]:
    """Every probe the spec switches on (every > 0), for `net` (a worker.engine.models.Net)."""
    p = spec.probes
    names = {id(t): n for n, t in net.named_parameters()}
    probes: list[Probe] = []
    if p.activations.every:
        if p.activations.point == "norm_output":
            points, hook = net.norm_slots, "output"
        else:  # what weight layer k+1 receives: after the nonlinearity (and pooling)
            points, hook = net.weight_layers[1:], "input"
        probes.append(
            ActivationsProbe(
                p.activations.every,
                points,
                net.layer_widths() if hasattr(net, "layer_widths") else spec.layer_widths(),
                spec.seed,
                p.activations.bins,
                p.activations.range,
                hook,
            )
        )
    if p.landscape.every:
        probes.append(
            LandscapeProbe(p.landscape.every, p.landscape.multipliers, p.landscape.batched)
        )
    if p.ics.every:
        weight_names = [names[id(layer.weight)] for layer in net.weight_layers]
        probes.append(IcsProbe(p.ics.every, p.ics.layers, weight_names, net.param_layer_index()))
    if p.sharpness.every:
        probes.append(SharpnessProbe(p.sharpness.every, p.sharpness.max_iters, spec.seed,
                                        p.sharpness.tol))
    if p.grad_norm.every:
        probes.append(GradNormProbe(p.grad_norm.every))
    if p.distance.every:
        probes.append(DistanceProbe(p.distance.every, init_params))
    return probes
