"""What every probe gets and gives.

A probe is an evaluation, not training. It never runs the live model: `ProbeContext` evaluates
L on a shadow copy of the network (made once per run), into which it copies the parameters to
evaluate at and the live buffers before every pass. So BatchNorm running statistics of the run
are untouched, and the noise generator is rewound to where the training forward of this step
started (every probe sees the training step's noise; training later continues from where it
left off). The shadow shares the live net's random generators, nothing else.

A persistent shadow rather than torch.func.functional_call on the live net: re-binding every
parameter and buffer per pass cost ~20% of a training step (bench/README.md).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from worker.engine.losses import LossFn
from worker.engine.sink import Distribution, EtaRecord
from worker.engine.state import NoiseStream

Params = dict[str, Tensor]


@dataclass
class ProbeOutput:
    scalars: dict[str, float] = field(default_factory=dict)
    eta_records: list[EtaRecord] = field(default_factory=list)
    distributions: list[Distribution] = field(default_factory=list)


@dataclass
class ProbeContext:
    """Everything about step t a probe may read: w_t, g_t, B_t and how to evaluate L on it."""

    step: int
    net: nn.Module
    params: Params  # w_t, detached; never modified
    grads: Params  # g_t, over all trainable parameters
    x: Tensor
    y: Tensor
    loss_fn: LossFn
    lr: float
    optimizer: torch.optim.Optimizer
    noise: NoiseStream | None = None
    mode: Literal["train", "eval"] = "train"
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    shadow: nn.Module | None = None  # make_shadow(net), kept by the trainer across steps

    def __post_init__(self) -> None:
        if self.shadow is None:
            self.shadow = make_shadow(self.net)
        self.shadow.train(self.mode == "train")
        self._shadow_params = dict(self.shadow.named_parameters())
        self._live_buffers = list(self.net.buffers())
        self._shadow_buffers = list(self.shadow.buffers())

    def loss_at(self, params: Mapping[str, Tensor]) -> float:
        """L(params) on B_t."""
        with torch.no_grad():
            self._load(params)
            return float(self._forward_loss(self.shadow))

    def loss_and_grad(
        self, params: Mapping[str, Tensor], wrt: Sequence[str] | None = None
    ) -> tuple[float, Params]:
        """L(params) on B_t and its gradient w.r.t. the parameters named in `wrt` (all: None)."""
        names = list(params) if wrt is None else list(wrt)
        self._load(params)
        loss = self._forward_loss(self.shadow)
        grads = torch.autograd.grad(loss, [self._shadow_params[n] for n in names])
        return float(loss.detach()), dict(zip(names, grads, strict=True))

    def differentiable_loss(self, params: Mapping[str, Tensor]) -> Tensor:
        """L(params) with a graph to `params` themselves, for Hessian-vector products."""
        self._load({})
        return self._forward_loss(lambda x: functional_call(self.shadow, dict(params), (x,)))

    def _load(self, params: Mapping[str, Tensor]) -> None:
        """The live buffers (train-mode BatchNorm will update the copies) and `params`."""
        with torch.no_grad():
            if self._live_buffers:  # a net without BatchNorm may have none
                torch._foreach_copy_(self._shadow_buffers, self._live_buffers)
            if params:
                names = list(params)
                torch._foreach_copy_([self._shadow_params[n] for n in names],
                                     [params[n] for n in names])

    def _forward_loss(self, model: Callable[[Tensor], Tensor]) -> Tensor:
        if self.noise is not None:
            self.noise.rewind()
        with self.autocast():
            out = model(self.x)
            if out.dtype in (torch.float16, torch.bfloat16):
                out = out.float()  # the loss of a bf16 forward is taken in fp32, as in training
            return self.loss_fn(out, self.y)


def make_shadow(net: nn.Module) -> nn.Module:
    """A deep copy of `net` that shares its random generators (noisy BN draws from the run's
    noise stream, which the probes rewind) and nothing else."""
    memo: dict[int, object] = {}
    for module in net.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Generator):
                memo[id(value)] = value
    return copy.deepcopy(net, memo)


class Probe:
    """A measured quantity with its own schedule: every `every` steps, step 0 included."""

    name: str = "probe"

    def __init__(self, every: int) -> None:
        self.every = every

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def on_train_forward(self, net: nn.Module) -> contextlib.AbstractContextManager:
        """Active around the training forward of a due step (activation statistics ride on it)."""
        return contextlib.nullcontext()

    def measure(self, ctx: ProbeContext) -> ProbeOutput:
        raise NotImplementedError


def global_norm(tensors: Iterator[Tensor] | Sequence[Tensor]) -> float:
    """||concat(tensors)||_2: per-tensor norms in one fused call, combined in float64."""
    ts = [t.detach() for t in tensors]
    if not ts:
        return 0.0
    norms = torch._foreach_norm(ts)  # the fused kernel optimisers use for grad clipping
    # One device sync for the whole set, not one per tensor.
    return float(torch.linalg.vector_norm(torch.stack(norms).double()))
