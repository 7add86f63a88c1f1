"""The one thread policy of every launch path (`landscope train`, the worker, the reproduction
script): how many intra-op threads torch uses for a run.

Precedence: the spec's `threads`, else the launcher's setting (LANDSCOPE_TORCH_THREADS, read by
server/settings.py; 0 = every core this process may use), else DEFAULT_THREADS = 1.

Why one by default: a float32 reduction split across n threads adds its partial sums in an
order that depends on n, so the same spec gives other numbers with another thread count (the
MLP stand-in's two test accuracies swap order between one and two threads). One thread is the
only count every machine has, so it is the one that reproduces across machines; and the
deployments Landscope ships (one solo-pool worker per process, often two per 2-core machine)
gain nothing from more. A user who wants speed over cross-machine reproducibility sets
LANDSCOPE_TORCH_THREADS or the spec's `threads`; the count used is recorded with the run
(environment.py) either way.

Inter-op threads are only recorded: torch allows setting them once, before any parallel work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

DEFAULT_THREADS = 1


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_threads(spec_threads: int | None, setting: int | None = None) -> int:
    """The intra-op thread count a run uses: the spec's, else the setting (0 = all usable
    cores), else DEFAULT_THREADS."""
    if spec_threads is not None:
        if spec_threads < 1:
            raise ValueError(f"threads must be >= 1, got {spec_threads}")
        return spec_threads
    if setting is not None:
        if setting < 0:
            raise ValueError(f"the thread setting must be >= 0, got {setting}")
        return setting or usable_cores()
    return DEFAULT_THREADS


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """torch's intra-op threads set to `n` inside, and put back afterwards (a worker process
    runs many runs, a test suite many trainers)."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
