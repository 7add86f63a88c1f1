"""Where the engine's measurements go.

The engine knows nothing of files, SQL or HTTP: it hands three kinds of record to a MetricSink.
- scalars: {key: value} at a step (train/loss, landscape/beta, ics/L5/l2, ...);
- eta records: one per step size of a landscape probe (Fig 11 needs every d(eta), not just bands);
- distributions: fixed-bin histograms of activations, per normalised layer.

Non-finite values are data (a diverged run), so they are passed through as float('nan'/'inf').
A sink may buffer; `flush` makes everything so far durable and `close` ends the run's stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True)
class EtaRecord:
    """One point of a landscape probe: the step w_t - eta g_t with eta = multiplier x LR."""

    multiplier: float
    eta: float
    loss: float  # l(eta) = L(w_t - eta g_t) on B_t
    grad_dist: float  # d(eta) = ||grad L(w_t - eta g_t) - g_t||_2


@dataclass(frozen=True)
class Distribution:
    """A fixed-bin histogram of one normalised layer's activations, or of one sampled unit.

    Bins are uniform on [lo, hi] (the last one closed, as numpy's) and the same at every step,
    so histograms over training and across runs line up; values outside land in underflow /
    overflow and non-finite ones in nonfinite, never silently dropped. Quantiles come from a
    fixed-stride subsample of at most 65,536 values.
    """

    layer: int  # normalised layer, 1 = nearest the input
    scope: Literal["layer", "unit"]
    unit: int | None  # the sampled unit (channel) for scope "unit"
    lo: float
    hi: float
    counts: list[int]
    underflow: int
    overflow: int
    nonfinite: int
    mean: float
    var: float
    quantiles: dict[str, float] = field(default_factory=dict)  # "q01" ... "q99"


class MetricSink(Protocol):
    def scalars(self, step: int, values: Mapping[str, float]) -> None: ...

    def eta_records(self, step: int, probe: str, records: Sequence[EtaRecord]) -> None: ...

    def distributions(self, step: int, records: Sequence[Distribution]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps everything in dicts: for tests, benchmarks and notebooks."""

    def __init__(self) -> None:
        self.series: dict[str, dict[int, float]] = {}
        self.etas: dict[str, dict[int, list[EtaRecord]]] = {}
        self.dists: dict[int, list[Distribution]] = {}
        self.closed = False

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.series.setdefault(key, {})[step] = float(value)

    def eta_records(self, step: int, probe: str, records: Sequence[EtaRecord]) -> None:
        self.etas.setdefault(probe, {})[step] = list(records)

    def distributions(self, step: int, records: Sequence[Distribution]) -> None:
        self.dists.setdefault(step, []).extend(records)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def values(self, key: str) -> list[float]:
        """The series of `key` in step order."""
        s = self.series.get(key, {})
        return [s[k] for k in sorted(s)]

    def steps(self, key: str) -> list[int]:
        return sorted(self.series.get(key, {}))


class TeeSink:
    """Hands every record to several sinks (e.g. a file and a summary kept in memory)."""

    def __init__(self, *sinks: MetricSink) -> None:
        self.sinks = sinks

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for s in self.sinks:
            s.scalars(step, values)

    def eta_records(self, step: int, probe: str, records: Sequence[EtaRecord]) -> None:
        for s in self.sinks:
            s.eta_records(step, probe, records)

    def distributions(self, step: int, records: Sequence[Distribution]) -> None:
        for s in self.sinks:
            s.distributions(step, records)

    def flush(self) -> None:
        for s in self.sinks:
            s.flush()

    def close(self) -> None:
        for s in self.sinks:
            s.close()
