"""Snapshots: a run's network (weights and BN buffers) at chosen steps, for analyses.

The snapshot of step s holds w_s, the weights at which step s's metrics are measured (the
trainer saves it at the top of loop iteration s, before the optimiser step), and the last one
w_T, after the last update, as step T = spec.steps (server/spec.py, SnapshotSpec). Unlike a
checkpoint it holds no optimiser or random state: nothing resumes from it, analyses only read
it. Files are written atomically and read with weights_only=True, so loading one can never
execute code; an existing snapshot is never rewritten (a resumed run re-trains the same w_s).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import torch

FORMAT = 1
PREFIX = "snap-"


class SnapshotStore(Protocol):
    def save(self, step: int, state: dict[str, Any]) -> None: ...

    def steps(self) -> list[int]: ...

    def load(self, step: int) -> dict[str, Any]: ...


def snapshot_name(step: int) -> str:
    return f"{PREFIX}{step:08d}.pt"


class DirectorySnapshotStore:
    """snap-00001234.pt files in a directory, one per saved step."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def path(self, step: int) -> Path:
        return self.dir / snapshot_name(step)

    def steps(self) -> list[int]:
        if not self.dir.exists():
            return []
        out = []
        for p in self.dir.glob(f"{PREFIX}*.pt"):
            digits = p.stem.removeprefix(PREFIX)
            if digits.isascii() and digits.isdigit():
                out.append(int(digits))
        return sorted(out)

    def save(self, step: int, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.path(step)
        tmp = final.with_name(final.name + ".tmp")
        torch.save({"format": FORMAT, **state}, tmp)
        os.replace(tmp, final)  # a crash mid-write never leaves a half snapshot

    def load(self, step: int) -> dict[str, Any]:
        path = self.path(step)
        if not path.exists():
            have = self.steps()
            raise FileNotFoundError(
                f"no snapshot of step {step} in {self.dir}; saved steps: {have or 'none'}"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT:
            raise ValueError(f"{path}: snapshot format {state.get('format')} != {FORMAT}")
        return state


def snapshot_state(step: int, spec_json: str, net: torch.nn.Module) -> dict[str, Any]:
    """What a snapshot holds: the step, the run spec (JSON) and net.state_dict() on the CPU.

    Copies are made (a CPU tensor's .cpu() would be the live parameter), so a store that keeps
    the state in memory or writes it later still holds w_s, not whatever the weights became.
    """
    model = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
    return {"step": step, "spec": spec_json, "model": model}
