"""Checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint holds the model and optimiser state, every random stream the run owns, the next
step (the data order is a pure function of the seed and the step, so the step is the data
position) and the spec as JSON. Files are written atomically and read with weights_only=True,
so loading one can never execute code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import torch

FORMAT = 1


class CheckpointStore(Protocol):
    def save(self, step: int, state: dict[str, Any]) -> None: ...

    def load_latest(self) -> dict[str, Any] | None: ...


class DirectoryCheckpointStore:
    """ckpt-00001234.pt files in a directory; keeps the newest `keep`."""

    def __init__(self, directory: Path, keep: int = 2) -> None:
        self.dir = Path(directory)
        self.keep = keep

    def _paths(self) -> list[Path]:
        return sorted(self.dir.glob("ckpt-*.pt")) if self.dir.exists() else []

    def save(self, step: int, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"ckpt-{step:08d}.pt"
        tmp = final.with_suffix(".tmp")
        torch.save({"format": FORMAT, **state}, tmp)
        os.replace(tmp, final)  # a crash mid-write never leaves a half checkpoint
        for old in self._paths()[: -self.keep]:
            old.unlink(missing_ok=True)

    def latest_step(self) -> int:
        """The step the newest checkpoint resumes at (0 if there is none)."""
        paths = self._paths()
        return int(paths[-1].stem.removeprefix("ckpt-")) if paths else 0

    def load_latest(self) -> dict[str, Any] | None:
        paths = self._paths()
        if not paths:
            return None
        state = torch.load(paths[-1], map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT:
            raise ValueError(f"{paths[-1]}: checkpoint format {state.get('format')} != {FORMAT}")
        return state
