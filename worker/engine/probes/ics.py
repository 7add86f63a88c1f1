"""Internal covariate shift as the paper defines it (Definition 2.1, Fig 3).

For weight layer i: G = dL/dW_i at w_t; G' = dL/dW_i, same batch, after every EARLIER layer's
parameters (the norms after them included) have taken this step's optimiser update and the
rest are unchanged. We record ||G - G'||_2 and cos(G, G'). One backward pass per layer.

"This step's optimiser update" is computed by a shadow optimiser of the same class, loaded
with a copy of the real one's state: the real optimiser, parameters and state stay untouched,
and momentum, weight decay or Adam are handled by the optimiser's own code, not re-derived.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from worker.engine.probes.base import Params, Probe, ProbeContext, ProbeOutput, global_norm_t


def optimizer_lookahead(
    optimizer: torch.optim.Optimizer, params: Params, grads: Params, names: dict[int, str]
) -> Params:
    """w_{t+1} as `optimizer.step()` would make it from g_t, without touching `optimizer`.

    `names` maps id(live parameter) -> its name in `params`.
    """
    groups = []
    for group in optimizer.param_groups:
        shadow = []
        for p in group["params"]:
            name = names[id(p)]
            q = params[name].detach().clone().requires_grad_(True)
            q.grad = grads[name].detach().clone()
            shadow.append(q)
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": shadow})
    shadow_opt = type(optimizer)(groups)
    shadow_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    shadow_opt.step()
    flat = [q for g in shadow_opt.param_groups for q in g["params"]]
    live = [p for g in optimizer.param_groups for p in g["params"]]
    return {names[id(p)]: q.detach() for p, q in zip(live, flat, strict=True)}


class IcsProbe(Probe):
    name = "ics"

    def __init__(
        self, every: int, layers: list[int], weight_names: list[str], layer_of: dict[str, int]
    ) -> None:
        """weight_names[i-1]: the weight of weight layer i; layer_of: param name -> layer index."""
        super().__init__(every)
        bad = [i for i in layers if not 1 <= i <= len(weight_names)]
        if bad:
            raise ValueError(f"ics layers {bad} outside 1..{len(weight_names)}")
        self.layers = list(layers)
        self.weight_names = weight_names
        self.layer_of = layer_of

    def measure(self, ctx: ProbeContext) -> ProbeOutput:
        names = {id(p): n for n, p in ctx.net.named_parameters()}
        updated = optimizer_lookahead(ctx.optimizer, ctx.params, ctx.grads, names)
        values = []
        for i in self.layers:
            w_name = self.weight_names[i - 1]
            mixed = {
                n: updated[n] if self.layer_of[n] < i else w for n, w in ctx.params.items()
            }
            g_new = ctx.grad_at(mixed, wrt=[w_name])
            values += shift_t(ctx.grads[w_name], g_new[w_name])
        flat = torch.stack(values).tolist()  # one host sync for every layer
        out: dict[str, float] = {}
        for j, i in enumerate(self.layers):
            l2, dot, denom = flat[3 * j : 3 * j + 3]
            out[f"ics/L{i}/l2"] = l2
            out[f"ics/L{i}/cos"] = dot / denom if denom > 0 else math.nan
        return ProbeOutput(scalars=out)


def shift_t(g: Tensor, g_new: Tensor) -> list[Tensor]:
    """[||G - G'||_2, <G, G'>, ||G|| ||G'||] as 0-dim float64 tensors on the device."""
    a = g.detach().double().flatten()
    b = g_new.detach().double().flatten()
    return [global_norm_t([a - b]), a @ b, a.norm() * b.norm()]


def shift(g: Tensor, g_new: Tensor) -> tuple[float, float]:
    """(||G - G'||_2, cos(G, G')), in float64."""
    l2, dot, denom = torch.stack(shift_t(g, g_new)).tolist()
    return l2, (dot / denom if denom > 0 else math.nan)
