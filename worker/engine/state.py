"""Random state the engine owns, kept apart from torch's global generator.

Every random draw of a run comes from a generator of its own (init, data order, noisy-BN noise,
probe start vectors), so that a probe can never shift the training trajectory and a checkpoint
can restore every stream exactly.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed for one stream of a run, e.g. derive_seed(seed, "batch-order", epoch).

    Seeding every stream with the bare run seed would make them identical (the first batch
    order equal to the data draw); a hash keeps them independent and reproducible.
    """
    text = ":".join(str(part) for part in (seed, *labels))
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def resolve_device(name: str) -> torch.device:
    """'auto' -> the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available here")
    return device


class NoiseStream:
    """The generator behind noisy BatchNorm, with the rewind that probes need.

    A probe at step t must see the same noise as the training forward of step t (so that
    l(0) is the training loss), and must leave the generator where training left it.
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(derive_seed(seed, "noise"))
        self._step_start: torch.Tensor | None = None

    def mark_step_start(self) -> None:
        """Called just before the training forward of a step."""
        self._step_start = self.generator.get_state()

    def rewind(self) -> None:
        """Back to the state the training forward of this step started from."""
        assert self._step_start is not None, "mark_step_start was not called"
        self.generator.set_state(self._step_start)

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
