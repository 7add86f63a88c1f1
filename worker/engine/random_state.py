"""Every random stream a forward pass may draw from, saved, rewound and restored together.

The engine's own networks draw only from their noise generator (noisy BatchNorm: NoiseStream in
state.py). A network the engine did not build (a plug-in, a user's model through the SDK) may
also draw from torch's global generators: dropout. A probe at step t must see the random draws
of step t's training forward (so that l(0) is the training loss), and must leave every stream
where training left it, or turning a probe on would change the trajectory. RandomState covers
the global CPU generator, the CUDA ones once CUDA is initialised, and every torch.Generator the
model's modules hold (the noise generator among them).

It duck-types NoiseStream (mark_step_start / rewind / get_state / set_state), so ProbeContext
rewinds it before every probe pass exactly as it rewinds the noise stream.
"""

from __future__ import annotations

import torch
from torch import nn

from worker.engine.introspect import module_generators


class RandomState:
    def __init__(self, model: nn.Module, *generators: torch.Generator) -> None:
        seen: dict[int, torch.Generator] = {id(g): g for g in module_generators(model)}
        for g in generators:
            seen.setdefault(id(g), g)
        self.generators = list(seen.values())
        self._step_start: tuple | None = None

    def get_state(self) -> tuple:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return torch.get_rng_state(), cuda, [g.get_state() for g in self.generators]

    def set_state(self, state: tuple) -> None:
        cpu, cuda, own = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for g, s in zip(self.generators, own, strict=True):
            g.set_state(s)

    def mark_step_start(self) -> None:
        """Called just before the training forward of a step."""
        self._step_start = self.get_state()

    @property
    def marked(self) -> bool:
        return self._step_start is not None

    def rewind(self) -> None:
        """Back to the state the training forward of this step started from."""
        assert self._step_start is not None, "no training forward recorded"
        self.set_state(self._step_start)
