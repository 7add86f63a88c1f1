"""The spec's `deterministic` switch: the same spec and seed give the same numbers run after
run on one machine, a GPU included.

On a CPU torch's kernels are deterministic already (with a fixed thread count, threads.py). On
a GPU they are not: cuDNN picks convolution algorithms that add in a varying order, some
backward kernels add with atomics, and autotuning (cudnn.benchmark) may pick another kernel
each time. The H200 run of bench/bench_gpu.py saw the plain VGG-16 at LR 0.1 train in one run
and stay at chance in a rerun of the same seed (bench/RESULTS.md, 2026-12-04): a figure that
comes back only by luck. With `deterministic: true` the Trainer runs building and training
under `deterministic_algorithms()`:

- torch.use_deterministic_algorithms(True): every op takes its deterministic version, and an
  op that has none raises a RuntimeError naming it (the run fails with that message rather
  than giving numbers that do not come back);
- cudnn.deterministic = True and cudnn.benchmark = False;
- on CUDA, CUBLAS_WORKSPACE_CONFIG=:4096:8 unless the process already has one: cuBLAS needs a
  fixed workspace configuration to be deterministic, and torch refuses cuBLAS calls in
  deterministic mode without it. torch reads it at the first such call, so it is set here,
  before the run's first one (a value set before the process started wins).

The switches are the process's, so the caller's are put back afterwards (a worker runs many
runs). The cost is speed on a GPU (deterministic kernels are often slower: measured by
bench_gpu.py's `determinism` section) and nothing on a CPU. The switches in force are recorded
with every run (environment.py: `deterministic`, `cudnn`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

CUBLAS_WORKSPACE = ":4096:8"  # torch's documented deterministic setting (":16:8" saves memory)


@contextlib.contextmanager
def deterministic_algorithms(on: bool, device: torch.device) -> Iterator[None]:
    """Deterministic kernels inside when `on` (the module docstring), the caller's switches
    put back afterwards; nothing is touched when off (a process that turned them on itself
    keeps them, and the run records them)."""
    if not on:
        yield
        return
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              cudnn.deterministic, cudnn.benchmark)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        enabled, warn_only, cudnn.deterministic, cudnn.benchmark = before
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
