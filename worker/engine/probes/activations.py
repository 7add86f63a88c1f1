"""Activation distributions per normalised layer (paper Fig 1c, 2, 6, 8, 9).

They ride on the training forward pass for free: at a due step, hooks keep a reference to each
normalised layer's output (or the next weight layer's input), and `measure` turns them into
fixed-bin histograms of the whole layer and of one sampled unit, plus quantiles and moments.
The sampled unit of each layer is drawn once, from the run's seed, and stays fixed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from worker.engine.probes.base import Probe, ProbeContext, ProbeOutput
from worker.engine.sink import Distribution
from worker.engine.state import derive_seed

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# Quantiles come from a fixed-stride subsample of at most this many values: sorting a whole
# conv layer at every probed step would cost more than the training step it rides on.
QUANTILE_SAMPLE = 1 << 16


class ActivationsProbe(Probe):
    name = "activations"

    def __init__(
        self,
        every: int,
        points: Sequence[nn.Module],
        widths: Sequence[int],
        seed: int,
        bins: int,
        value_range: tuple[float, float],
        hook: str = "output",
    ) -> None:
        """points[k-1]: the module whose output ("output") or input ("input") is layer k's."""
        super().__init__(every)
        self.points = list(points)
        self.hook = hook
        self.bins = bins
        self.lo, self.hi = value_range
        self.units = [
            int(torch.randint(w, (1,), generator=torch.Generator().manual_seed(
                derive_seed(seed, "unit", k))))
            for k, w in enumerate(widths, start=1)
        ]
        self._captured: dict[int, Tensor] = {}

    @contextlib.contextmanager
    def on_train_forward(self, net: nn.Module) -> Iterator[None]:
        handles = []
        for k, module in enumerate(self.points, start=1):
            if self.hook == "output":
                fn = self._keep_output(k)
                handles.append(module.register_forward_hook(fn))
            else:
                handles.append(module.register_forward_pre_hook(self._keep_input(k)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _keep_output(self, k: int):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            self._captured[k] = output.detach()

        return hook

    def _keep_input(self, k: int):
        def hook(_module: nn.Module, inputs: tuple) -> None:
            self._captured[k] = inputs[0].detach()

        return hook

    def measure(self, ctx: ProbeContext) -> ProbeOutput:
        out = ProbeOutput()
        with torch.no_grad():
            for k, a in sorted(self._captured.items()):
                unit = self.units[k - 1]
                for scope, values in (("layer", a), ("unit", a[:, unit])):
                    d = self.describe(k, scope, unit if scope == "unit" else None, values)
                    out.distributions.append(d)
                    prefix = f"act/L{k}/" + ("unit_" if scope == "unit" else "")
                    out.scalars[prefix + "mean"] = d.mean
                    out.scalars[prefix + "var"] = d.var
        self._captured.clear()
        return out

    def describe(self, layer: int, scope: str, unit: int | None, values: Tensor) -> Distribution:
        """Histogram on [lo, hi] (uniform bins, the last one closed, as numpy's), moments and
        quantiles; a few passes over the values, so it stays cheap next to a training step."""
        v = values.flatten()
        if v.dtype not in (torch.float32, torch.float64):
            v = v.float()
        var, mean = torch.var_mean(v, correction=0)  # NaN/inf propagate: a diverged layer shows
        n_finite = int(torch.isfinite(v).sum())
        finite = v if n_finite == v.numel() else v[torch.isfinite(v)]
        counts = torch.histc(finite, bins=self.bins, min=self.lo, max=self.hi)
        return Distribution(
            layer=layer,
            scope=scope,  # type: ignore[arg-type]
            unit=unit,
            lo=self.lo,
            hi=self.hi,
            counts=[int(c) for c in counts.tolist()],
            underflow=int((finite < self.lo).sum()),
            overflow=int((finite > self.hi).sum()),
            nonfinite=v.numel() - n_finite,
            mean=float(mean),
            var=float(var),
            quantiles=_quantiles(finite),
        )


def _quantiles(finite: Tensor) -> dict[str, float]:
    if finite.numel() == 0:
        return {f"q{round(q * 100):02d}": float("nan") for q in QUANTILES}
    if finite.numel() > QUANTILE_SAMPLE:  # a fixed stride keeps this deterministic
        finite = finite[:: -(-finite.numel() // QUANTILE_SAMPLE)]
    if finite.device.type == "cpu":  # numpy's sort is ~4x torch's on CPU; same definition
        qs = np.quantile(finite.numpy(), QUANTILES)
    else:
        qs = torch.quantile(finite, torch.tensor(QUANTILES, device=finite.device,
                                                 dtype=finite.dtype)).tolist()
    return {f"q{round(q * 100):02d}": float(x) for q, x in zip(QUANTILES, qs, strict=True)}
