"""Side-by-side timing for the benchmarks: variants built once, warmed up, then timed
interleaved (A B, B A, A B, ...) so that neither always goes first and drift in the machine's
speed hits both sides alike; medians and per-repetition paired ratios; and each benchmark's
wall time with the share of it spent waiting for a CPU (Linux PSI)."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench._machine import cpu_pressure_us


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(variants: dict[str, tuple[Callable[[int], None], int]], reps: int, warmup: int,
               device: torch.device) -> dict[str, list[float]]:
    """Seconds per segment of each variant (fn, n): warm-up, then reps in alternating order."""
    names = list(variants)
    for _ in range(warmup):
        for k in names:
            fn, n = variants[k]
            fn(n)
    # The objects alive now (models, data, torch's own) move to gc's permanent generation, so
    # a full collection inside a timed segment costs what that segment allocated, not ~80 ms.
    gc.collect()
    gc.freeze()
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps):
        for k in names if r % 2 == 0 else names[::-1]:
            fn, n = variants[k]
            _sync(device)
            t0 = time.perf_counter()
            fn(n)
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    gc.unfreeze()
    return times


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def paired(num: list[float], den: list[float], f: Callable[[float, float], float]) -> dict:
    """f(num_r, den_r) per repetition: median and range (the spread of the ratio itself)."""
    rs = [f(a, b) for a, b in zip(num, den, strict=True)]
    return {"median": med(rs), "min": min(rs), "max": max(rs)}


def gauged(fn: Callable[..., dict], *args: Any) -> dict:
    """fn(*args) plus its wall time and the share of it spent waiting for a CPU (Linux PSI)."""
    p0, t0 = cpu_pressure_us(), time.perf_counter()
    out = fn(*args)
    wall = time.perf_counter() - t0
    p1 = cpu_pressure_us()
    out["wall_s"] = wall
    out["cpu_pressure"] = None if p0 is None or p1 is None else (p1 - p0) / 1e6 / wall
    note = "" if (out["cpu_pressure"] or 0) < 0.1 else "  <- other load competed: noisier"
    print(f"    {fn.__name__}: {wall:.0f} s, cpu pressure {pressure(out)}{note}", flush=True)
    return out


def pressure(r: dict) -> str:
    """The CPU pressure `gauged` recorded, for a report."""
    return "n/a" if r.get("cpu_pressure") is None else f"{r['cpu_pressure']:.2f}"
