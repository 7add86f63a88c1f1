"""What every probe gets and gives.

A probe is an evaluation, not training. It never calls the model with its live parameters and
buffers: `ProbeContext` evaluates L at any parameter dict through torch.func.functional_call,
with fresh copies of the buffers (so BatchNorm running statistics are untouched) and the noise
generator rewound to where the training forward of this step started (so every probe sees the
training step's noise, and training later continues from where it left off).
"""

from __future__ import annotations

import contextlib
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

    def loss_at(self, params: Mapping[str, Tensor]) -> float:
        """L(params) on B_t."""
        with torch.no_grad():
            return float(self._forward_loss(params))

    def loss_and_grad(
        self, params: Mapping[str, Tensor], wrt: Sequence[str] | None = None
    ) -> tuple[float, Params]:
        """L(params) on B_t and its gradient w.r.t. the parameters named in `wrt` (all: None)."""
        names = list(params) if wrt is None else list(wrt)
        leaves = {n: t.detach().requires_grad_(n in names) for n, t in params.items()}
        loss = self._forward_loss(leaves)
        grads = torch.autograd.grad(loss, [leaves[n] for n in names])
        return float(loss.detach()), dict(zip(names, grads, strict=True))

    def differentiable_loss(self, params: Mapping[str, Tensor]) -> Tensor:
        """L(params) with a graph, for higher-order derivatives (Hessian-vector products)."""
        return self._forward_loss(params)

    def _forward_loss(self, params: Mapping[str, Tensor]) -> Tensor:
        if self.noise is not None:
            self.noise.rewind()
        # Fresh buffers: train-mode BatchNorm updates its running statistics in place.
        buffers = {n: b.clone() for n, b in self.net.named_buffers()}
        with self._probe_mode(), self.autocast():
            out = functional_call(self.net, {**params, **buffers}, (self.x,))
            if out.dtype in (torch.float16, torch.bfloat16):
                out = out.float()  # the loss of a bf16 forward is taken in fp32, as in training
            return self.loss_fn(out, self.y)

    @contextlib.contextmanager
    def _probe_mode(self) -> Iterator[None]:
        was_training = self.net.training
        self.net.train(self.mode == "train")
        try:
            yield
        finally:
            self.net.train(was_training)


class Probe:
    """A measured quantity with its own schedule: every `every` steps, step 0 included."""

    name: str = "probe"

    def __init__(self, every: int) -> None:
        self.every = every

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def passes(self) -> int:
        """Forward+backward passes one measurement costs (for the cost estimate)."""
        return 0

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
