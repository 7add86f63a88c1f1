"""Activation distributions per normalised layer (paper Fig 1c, 2, 6, 8, 9).

They ride on the training forward pass for free: at a due step, hooks keep a reference to each
normalised layer's output (or the next weight layer's input), and `measure` turns them into
fixed-bin histograms of the whole layer and of one sampled unit, plus quantiles and moments.
The sampled unit of each layer is drawn once, from the run's seed, and stays fixed.
"""

from __future__ import annotations

import contextlib
import math
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
        self._edge_cache: dict[str, _HistcEdges] = {}
        self._q_cache: dict[tuple, Tensor] = {}
        self._bounds_cache: dict[tuple, Tensor] = {}  # histc's thresholds, on a device

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
        rows: list[tuple[int, str, int | None, Tensor]] = []
        for k, a in sorted(self._captured.items()):
            unit = self.units[k - 1]
            rows.append((k, "layer", None, a))
            rows.append((k, "unit", unit, a[:, unit]))
        self._captured.clear()
        with torch.no_grad():
            summaries = self.summarize([values for *_, values in rows])
        for (k, scope, unit, _), d in zip(rows, summaries, strict=True):
            d = Distribution(layer=k, scope=scope, unit=unit, **d)  # type: ignore[arg-type]
            out.distributions.append(d)
            prefix = f"act/L{k}/" + ("unit_" if scope == "unit" else "")
            out.scalars[prefix + "mean"] = d.mean
            out.scalars[prefix + "var"] = d.var
        return out

    def summarize(self, tensors: Sequence[Tensor], backend: str | None = None) -> list[dict]:
        """Histogram on [lo, hi] (uniform bins, the last one closed, as numpy's), under/overflow
        and non-finite counts, moments and quantiles of each tensor's values: the fields of a
        Distribution. A few passes over the values, so it stays cheap next to a training step.

        On CPU ("numpy"): per tensor one sum, one centred sum of squares and one sort of the
        quantile sample; when that sample is every value the histogram comes from binary
        searches in it (the bin thresholds are exactly those of torch.histc, see
        _HistcEdges), else from torch.histc. Elsewhere ("torch"): device ops only and one host
        transfer for every tensor of the probe point. Both give the same counts.
        """
        vs = []
        for t in tensors:
            v = t.reshape(-1)
            vs.append(v if v.dtype in (torch.float32, torch.float64) else v.float())
        if backend is None:
            backend = "numpy" if all(v.device.type == "cpu" for v in vs) else "torch"
        if backend == "numpy":
            return [self._summary_numpy(v) for v in vs]
        return self._summaries_torch(vs)

    def _summary_numpy(self, v: Tensor) -> dict:
        a = v.contiguous().numpy()
        n = a.size
        edges = self._edges(a.dtype)
        with np.errstate(all="ignore"):
            total = a.sum()  # pairwise; finite exactly when every value is (inf/NaN propagate)
            mean = float(total) / n if n else math.nan
            stride = -(-n // QUANTILE_SAMPLE) if n else 1
            if math.isfinite(total):
                d = a - a.dtype.type(mean)
                var = float(np.square(d, out=d).sum()) / n if n else math.nan  # two-pass
                finite, n_finite, sample = a, n, a[::stride]
            else:  # a diverged layer: the moments are NaN/inf, so that it shows
                var = math.nan
                ok = np.isfinite(a)
                finite = a[ok]
                n_finite = finite.size
                sample = a[::stride][ok[::stride]]
        srt = np.sort(sample)
        if stride == 1:  # the sample is every value: bin edges by binary search
            counts, under, over = edges.count_sorted(srt)
        else:
            counts, under, over = edges.count(finite)
        return {
            "lo": self.lo, "hi": self.hi, "counts": counts, "underflow": under,
            "overflow": over, "nonfinite": n - n_finite, "mean": mean, "var": var,
            "quantiles": dict(zip(QUANTILE_KEYS, _sorted_quantiles(srt), strict=True)),
        }

    def _summaries_torch(self, vs: list[Tensor]) -> list[dict]:
        packed = []
        for v in vs:
            n = v.numel()
            ok = torch.isfinite(v)
            masked = torch.where(ok, v, torch.full((), math.nan, dtype=v.dtype, device=v.device))
            var, mean = torch.var_mean(v, correction=0)  # NaN/inf propagate: a diverged layer
            counts = self._device_counts(v, ok, masked)
            sample = masked[:: -(-n // QUANTILE_SAMPLE) if n else 1]
            key = (v.dtype, v.device)
            if key not in self._q_cache:
                self._q_cache[key] = torch.tensor(QUANTILES, dtype=v.dtype, device=v.device)
            qs = torch.nanquantile(sample, self._q_cache[key])
            packed.append(torch.cat([
                counts.double(),
                torch.stack([ok.sum(), (masked < self.lo).sum(), (masked > self.hi).sum()])
                .double(),
                torch.stack([mean, var]).double(),
                qs.double(),
            ]))
        flat = torch.stack(packed).tolist() if packed else []  # one host sync for the point
        out = []
        b = self.bins
        for v, row in zip(vs, flat, strict=True):
            n_finite, under, over = (int(x) for x in row[b : b + 3])
            out.append({
                "lo": self.lo, "hi": self.hi, "counts": [int(c) for c in row[:b]],
                "underflow": under, "overflow": over, "nonfinite": v.numel() - n_finite,
                "mean": row[b + 3], "var": row[b + 4],
                "quantiles": dict(zip(QUANTILE_KEYS, row[b + 5 :], strict=True)),
            })
        return out

    def _device_counts(self, v: Tensor, ok: Tensor, masked: Tensor) -> Tensor:
        """histc's counts of the finite values, on the values' device. Under deterministic
        algorithms (the spec's `deterministic`) torch.histc has no CUDA kernel that may run,
        so the counts come from a sort: the finite values sorted (the others after them, as
        +inf), and binary searches for histc's bin thresholds (_HistcEdges): the same counts."""
        if not torch.are_deterministic_algorithms_enabled():
            return torch.histc(masked, bins=self.bins, min=self.lo, max=self.hi)  # NaN skipped
        key = (v.dtype, v.device)
        if key not in self._bounds_cache:
            edges = self._edges(np.dtype(str(v.dtype).removeprefix("torch.")))
            self._bounds_cache[key] = torch.tensor([*edges.starts.tolist(), float(edges.hi)],
                                                   dtype=v.dtype, device=v.device)
        bounds = self._bounds_cache[key]
        srt = torch.sort(torch.where(ok, v, torch.full((), math.inf, dtype=v.dtype,
                                                         device=v.device))).values
        at = torch.cat([torch.searchsorted(srt, bounds[:-1], side="left"),
                        torch.searchsorted(srt, bounds[-1:], side="right")])
        return at.diff()

    def _edges(self, dtype: np.dtype) -> _HistcEdges:
        key = np.dtype(dtype).str
        if key not in self._edge_cache:
            self._edge_cache[key] = _HistcEdges(self.lo, self.hi, self.bins, dtype)
        return self._edge_cache[key]


class _HistcEdges:
    """torch.histc's bins as thresholds, so that counts can come from binary searches.

    histc puts a value x of [lo, hi] (lo, hi in x's dtype) in bin
    trunc((x - lo) * bins / (hi - lo)), evaluated in that dtype, the last bin closed. That is
    non-decreasing in x, so bin j >= 1 starts at the smallest representable x whose bin is >= j:
    found here once, by bisection over the representable values. Counting a sorted array
    against these thresholds gives histc's counts exactly (tested against torch.histc near
    every edge).
    """

    def __init__(self, lo: float, hi: float, bins: int, dtype: np.dtype) -> None:
        dtype = np.dtype(dtype)
        f = dtype.type
        self.bins = bins
        self.lo, self.hi = f(lo), f(hi)  # histc's outer edges: linspace end points in x's dtype
        width, nb = self.hi - self.lo, f(bins)
        itype = np.dtype(f"i{dtype.itemsize}")
        sign = 1 << (8 * dtype.itemsize - 1)

        def key(x: np.floating) -> int:  # the order of the floats, as integers
            i = int(np.array(x, dtype).view(itype))
            return i if i >= 0 else -(i + sign)

        def value(k: int) -> np.floating:
            return np.array(k if k >= 0 else -k - sign, itype).view(dtype)[()]

        def bin_of(x: np.floating) -> int:
            return int((x - self.lo) * nb / width)

        starts = [self.lo]
        for j in range(1, bins):
            below, above = key(self.lo), key(self.hi)  # bin_of: 0 < j, and bins >= j
            while above - below > 1:
                mid = (below + above) // 2
                if bin_of(value(mid)) >= j:
                    above = mid
                else:
                    below = mid
            starts.append(value(above))
        self.starts = np.array(starts, dtype=dtype)

    def count_sorted(self, srt: np.ndarray) -> tuple[list[int], int, int]:
        """(counts, underflow, overflow) of a sorted array of finite values."""
        idx = np.searchsorted(srt, self.starts, side="left").tolist()
        right = int(np.searchsorted(srt, self.hi, side="right"))
        idx.append(right)
        counts = [b - a for a, b in zip(idx[:-1], idx[1:], strict=True)]
        return counts, idx[0], srt.size - right

    def count(self, finite: np.ndarray) -> tuple[list[int], int, int]:
        """The same for any array of finite values, with torch.histc."""
        t = torch.from_numpy(finite)
        counts = torch.histc(t, bins=self.bins, min=float(self.lo), max=float(self.hi))
        under = int(np.count_nonzero(finite < self.lo))
        over = int(np.count_nonzero(finite > self.hi))
        return [int(c) for c in counts.tolist()], under, over


QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
_Q = np.array(QUANTILES, dtype=np.float64)


def _sorted_quantiles(srt: np.ndarray) -> list[float]:
    """np.quantile(srt, QUANTILES) ("linear") of a sorted array, without sorting it again: the
    same index arithmetic and interpolation as numpy's, so the same values (tested)."""
    n = srt.size
    if n == 0:
        return [math.nan] * len(QUANTILES)
    virtual = (n - 1) * _Q
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = -1
    nxt[above] = -1
    gamma = virtual - prev
    a, b = srt[prev.astype(np.intp)], srt[nxt.astype(np.intp)]
    diff = b - a
    lerp = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    return lerp.tolist()
