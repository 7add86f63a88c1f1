"""An analysis measured in its run's numerics, and the numerics it was measured in, recorded.

A surface or a spectrum is a result like a training curve: the same snapshot gives other bits
with another thread count (a float32 reduction is split by thread) and, on a GPU, from run to
run unless deterministic kernels are on (hessian-vector products go through backward kernels
that add with atomics). So an analysis of a run is computed as the run was trained: the run's
`threads` (else the launcher's setting, threads.py) and its `deterministic` switch
(determinism.py), both put back afterwards (a worker runs many jobs).

What was in force is recorded per analysed step as a value named "environment:<digest>" (the
digest of the environment itself): the worker that prepares a step writes one, and every
worker that evaluates a chunk of it writes its own, so a surface filled by several machines
lists each distinct environment once (the SQL sink keeps the first value of a name: the same
environment written again changes nothing). The API gathers them into the step's
`environments` (server/services/analysis_views.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import torch

from server.analysis_spec import ENV_PREFIX
from worker.engine.determinism import deterministic_algorithms
from worker.engine.environment import environment
from worker.engine.threads import torch_threads


def environment_key(env: dict[str, Any]) -> str:
    """The value name of an environment: the prefix and 12 hex digits of its digest."""
    blob = json.dumps(env, sort_keys=True, default=str).encode()
    return ENV_PREFIX + hashlib.sha256(blob).hexdigest()[:12]


class JobNumerics:
    """The thread count (None: the process's own, left alone) and determinism switch of one
    analysis job on `device`, in `dtype`."""

    def __init__(self, threads: int | None, deterministic: bool, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.threads, self.deterministic = threads, deterministic
        self.device, self.dtype = device, dtype
        self._env: dict[str, Any] | None = None
        self._recorded: set[int] = set()  # steps whose sink has this job's record

    def __call__(self) -> contextlib.ExitStack:
        """The job's numerics in force inside (`with numerics(): ...`)."""
        stack = contextlib.ExitStack()
        if self.threads is not None:
            stack.enter_context(torch_threads(self.threads))
        stack.enter_context(deterministic_algorithms(self.deterministic, self.device))
        return stack

    def environment(self) -> dict[str, Any]:
        """environment.py's record, read inside the job's numerics (once: they are fixed for
        the job's life, and the caller's switches are put back between its calls)."""
        if self._env is None:
            with self():
                self._env = environment(self.device, self.dtype)
        return self._env

    def record(self, step: int) -> dict[str, Any]:
        """{"environment:<digest>": environment}, the value step `step`'s sink gets: once per
        step and job (a worker keeps its job for chunk after chunk; the sink would keep the
        first write anyway, so a second is only a wasted insert)."""
        if step in self._recorded:
            return {}
        self._recorded.add(step)
        env = self.environment()
        return {environment_key(env): env}
