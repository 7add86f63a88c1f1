"""The grid evaluator's private copy of a network, set up for one BatchNorm mode.

The copy shares nothing with the caller's network, not even its random generators (unlike the
probes' Shadow, which must replay the training step's noise): every generator a module holds
(noisy BatchNorm's) is replaced by a private one that the evaluator re-seeds before every
evaluated point, so that the same point always sees the same noise and the caller's generator
never moves. The three modes (server/analysis_spec.py):

- batch: train mode, with the BatchNorm layers' running statistics removed. A train-mode
  forward normalises with the batch's own statistics and never reads them, so the values are
  those of a train-mode copy, and there is nothing to update in place: that is what lets
  torch.func.vmap evaluate several parameter sets at once (each with its own batch statistics).
- running: eval mode with the copied (snapshot's) running statistics, read-only.
- recalibrated: eval mode with running statistics recomputed at every evaluated point: reset,
  then the recalibration set forwarded in train mode with momentum None (torch's cumulative
  average: every batch counts equally), then eval. The recalibration forward is a training-mode
  forward, noise included (drawn from the private generator, re-seeded first), because the
  running statistics it replaces were accumulated on such forwards.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from worker.engine.state import derive_seed

_BN = nn.modules.batchnorm._BatchNorm


class EvalCopy:
    """A deep copy of `net` for evaluation in `bn_mode`, with private noise generators."""

    def __init__(self, net: nn.Module, bn_mode: str, noise_seed: int) -> None:
        memo: dict[int, object] = {}
        self.generators: list[torch.Generator] = []
        for module in net.modules():
            for value in vars(module).values():
                if isinstance(value, torch.Generator) and id(value) not in memo:
                    g = torch.Generator(device=value.device)
                    memo[id(value)] = g
                    self.generators.append(g)
        self.seeds = [derive_seed(noise_seed, "analysis-noise", i)
                      for i in range(len(self.generators))]
        self.module = copy.deepcopy(net, memo)
        self.bn_mode = bn_mode
        self.norms = [m for m in self.module.modules() if isinstance(m, _BN)]
        if bn_mode == "batch":
            for m in self.norms:
                m.track_running_stats = False
                m.running_mean = m.running_var = m.num_batches_tracked = None
        elif bn_mode == "recalibrated":
            for m in self.norms:
                m.momentum = None  # cumulative average over the recalibration batches
        elif bn_mode != "running":
            raise ValueError(f"unknown bn_mode {bn_mode!r}")
        self._mode(bn_mode == "batch")
        for p in self.module.parameters():
            p.requires_grad_(False)  # values are written in; gradients go through functional_call
        self.params = dict(self.module.named_parameters())
        self.flat = _flatten(list(self.params.values()))
        self.vmapping = False
        # Under vmap, group norm asks whether its input is channels-last, which vmap cannot
        # answer on the CPU (see probes/base.py); only then its input is made contiguous.
        for m in self.module.modules():
            if isinstance(m, nn.GroupNorm):
                m.register_forward_pre_hook(self._contiguous_under_vmap)

    def _contiguous_under_vmap(self, _module: nn.Module, args: tuple) -> tuple | None:
        return (args[0].contiguous(), *args[1:]) if self.vmapping else None

    def _mode(self, train: bool) -> None:
        """train/eval mode, with every Dropout module off in both: dropout is a training-time
        draw from the global RNG, not a normalisation, and a point's value must be a function
        of its parameters (a user's network may have it: landscope.analyse; the engine's not)."""
        self.module.train(train)
        for m in self.module.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()

    def rewind(self) -> None:
        """Every private noise generator back to its fixed seed."""
        for g, s in zip(self.generators, self.seeds, strict=True):
            g.manual_seed(s)

    @torch.no_grad()
    def recalibrate(self, batches: Sequence[Tensor]) -> None:
        """Running statistics recomputed at the current parameters, then eval mode."""
        for m in self.norms:
            m.reset_running_stats()
        self._mode(True)
        self.rewind()
        try:
            for xb in batches:
                self.module(xb)
        finally:
            self._mode(False)

    def buffers(self) -> dict[str, Tensor]:
        """Copies of the current buffers (running statistics), to freeze them in a closure."""
        return {n: b.detach().clone() for n, b in self.module.named_buffers()}


def _flatten(params: list[nn.Parameter]) -> Tensor | None:
    """One 1-D buffer holding every parameter, each parameter made a view into it: writing a
    grid point is then two vector ops over the buffer instead of two per parameter tensor (on
    the CPU, per-tensor dispatch was most of the write's cost: ~0.1 ms a point for the 6 x 128
    MLP's 22 tensors). None, and per-tensor writes, when the parameters cannot share one buffer
    (mixed dtypes or devices) or one is not contiguous (a channels-last weight would change
    the kernels a forward picks, and so its rounding)."""
    if not params:
        return None
    first = params[0]
    if any(p.dtype != first.dtype or p.device != first.device or not p.is_contiguous()
           for p in params):
        return None
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        offset = 0
        for p in params:
            n = p.numel()
            p.data = flat[offset : offset + n].view_as(p)
            offset += n
    return flat
