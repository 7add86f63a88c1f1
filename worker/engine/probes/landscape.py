"""Loss landscape, gradient predictiveness and effective beta-smoothness (paper Fig 4, 10, 11).

At step t, along the gradient direction, for every eta in S = multipliers x LR:
    l(eta) = L(w_t - eta g_t)                          the loss band is [min l, max l]
    d(eta) = ||grad L(w_t - eta g_t) - g_t||_2         gradient predictiveness band
    beta_t = max_eta d(eta) / (eta ||g_t||_2)          effective beta-smoothness
Each eta costs one forward and one backward pass, so one measurement costs K = |S| passes; the
K losses and distances stay on the device until one host sync at the end.

Two paths give the same values (up to fp32 reduction order): the loop (K passes on the shadow,
one after the other; the default) and, with `batched`, one torch.func.vmap call over the K
stacked parameter sets (ProbeContext.losses_and_grads_along). Where vmap cannot run (an op
without a batching rule, memory), the batched probe falls back to the loop for the rest of the
run, warns once, and records the path of every measurement as `probe_path/landscape_batched`
(1 = vmap, 0 = loop), so a run never silently mixes paths.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch

from worker.engine.probes.base import Probe, ProbeContext, ProbeOutput, global_norm_t
from worker.engine.sink import EtaRecord

log = logging.getLogger(__name__)

PATH_KEY = "probe_path/landscape_batched"


class LandscapeProbe(Probe):
    name = "landscape"

    def __init__(self, every: int, multipliers: list[float], batched: bool = False) -> None:
        super().__init__(every)
        self.multipliers = list(multipliers)
        self.batched = batched
        self.fallback: str | None = None  # why the batched probe uses the loop (None: it does not)

    def measure(self, ctx: ProbeContext) -> ProbeOutput:
        g = [ctx.grads[n] for n in ctx.names]
        etas = [m * ctx.lr for m in self.multipliers]
        values = None
        if self.batched and self.fallback is None:
            try:
                values = self._batched(ctx, g, etas)
            except (RuntimeError, NotImplementedError) as exc:  # no batching rule, OOM, ...
                self.fallback = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                msg = f"landscape probe: vmap-batched path failed, using the loop: {self.fallback}"
                log.warning(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
        used_vmap = values is not None
        if values is None:
            values = self._loop(ctx, g, etas)
        g_norm, *flat = values.tolist()  # the one host sync
        records = [
            EtaRecord(multiplier=m, eta=eta, loss=flat[2 * i], grad_dist=flat[2 * i + 1])
            for i, (m, eta) in enumerate(zip(self.multipliers, etas, strict=True))
        ]
        losses = [r.loss for r in records]
        dists = [r.grad_dist for r in records]
        betas = [r.grad_dist / (r.eta * g_norm) if g_norm > 0 else math.nan for r in records]
        scalars = {
            "landscape/loss_min": _nanmin(losses),
            "landscape/loss_max": _nanmax(losses),
            "landscape/grad_dist_min": _nanmin(dists),
            "landscape/grad_dist_max": _nanmax(dists),
            "landscape/beta": _nanmax(betas),
        }
        if self.batched:
            scalars[PATH_KEY] = 1.0 if used_vmap else 0.0
        return ProbeOutput(scalars=scalars, eta_records=records)

    @staticmethod
    def _loop(ctx: ProbeContext, g: list, etas: list[float]) -> torch.Tensor:
        """[||g_t||, l(eta_1), d(eta_1), ...]: K passes, every value left on the device."""
        values = [global_norm_t(g)]
        for eta in etas:
            loss, grads = ctx.loss_and_grad_along(eta)  # at w_t - eta g_t
            torch._foreach_sub_(grads, g)  # fresh tensors: subtract in place
            values += [loss.double(), global_norm_t(grads)]
        return torch.stack(values)

    @staticmethod
    def _batched(ctx: ProbeContext, g: list, etas: list[float]) -> torch.Tensor:
        """The same values from one vmap call over the K stacked parameter sets."""
        losses, grads = ctx.losses_and_grads_along(etas)  # (K,), [(K, *shape)]
        k = len(etas)
        # d(eta_k): per tensor and eta an fp32 norm of grad_k - g_t (as the loop's fused
        # per-tensor norms), combined over tensors in float64 (as global_norm_t).
        per_tensor = torch.stack([
            torch.linalg.vector_norm((gk - gt.unsqueeze(0)).reshape(k, -1), dim=1)
            for gk, gt in zip(grads, g, strict=True)
        ])  # (P, K)
        dists = torch.linalg.vector_norm(per_tensor.double(), dim=0)
        pairs = torch.stack([losses.double().reshape(k), dists], dim=1).reshape(-1)
        return torch.cat([global_norm_t(g).reshape(1).to(pairs.device), pairs])


def _nanmin(xs: list[float]) -> float:
    """min over the values; NaN if any is NaN (a band that touches NaN is not a band)."""
    return math.nan if any(math.isnan(x) for x in xs) else min(xs)


def _nanmax(xs: list[float]) -> float:
    return math.nan if any(math.isnan(x) for x in xs) else max(xs)
