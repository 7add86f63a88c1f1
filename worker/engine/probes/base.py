"""What every probe gets and gives.

A probe is an evaluation, not training. It never runs the live model: `ProbeContext` evaluates
L on a `Shadow`, a copy of the network made once per run, into which it writes the parameters
to evaluate at before every pass. So BatchNorm running statistics of the run are untouched, and
the noise generator is rewound to where the training forward of this step started (every probe
sees the training step's noise; training later continues from where it left off). The shadow
shares the live net's random generators, nothing else.

A persistent shadow rather than torch.func.functional_call on the live net: re-binding every
parameter and buffer per pass cost ~20% of a training step (bench/README.md). Everything a
probed step needs that does not change between steps (the shadow's parameter list, its mode)
is set up once, so building a `ProbeContext` is cheap enough for probes due at every step.

The batched landscape path (`ProbeContext.losses_and_grads_along`) does use functional_call,
on the shadow, under torch.func.vmap: K stacked parameter sets in one call. The shadow is what
makes that safe: in train mode its BatchNorm layers have no running statistics (so nothing is
updated in place under vmap: each parameter set normalises with its own batch statistics), in
eval mode they only read the (unbatched) running statistics.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from worker.engine.losses import LossFn
from worker.engine.sink import Distribution, EtaRecord
from worker.engine.state import NoiseStream

Params = dict[str, Tensor]
Mode = Literal["train", "eval"]


@dataclass
class ProbeOutput:
    scalars: dict[str, float] = field(default_factory=dict)
    eta_records: list[EtaRecord] = field(default_factory=list)
    distributions: list[Distribution] = field(default_factory=list)


class Shadow:
    """The probes' copy of a network, made once per run and reused at every probed step.

    It shares the live net's random generators (noisy BN draws from the run's noise stream,
    which the probes rewind) and nothing else. In train mode its BatchNorm layers keep no running
    statistics: a train-mode forward normalises with the batch's own statistics and never reads
    them (the loss and gradients are bitwise those of a copy that keeps them; tested), so there
    is nothing to copy in before a pass nor to update during it. Whatever buffers remain (the
    running statistics in eval mode) are copied from the live net before every pass.
    """

    def __init__(self, net: nn.Module, mode: Mode = "train") -> None:
        self.net = net
        self.mode = mode
        self.module = make_shadow(net)
        if mode == "train":
            for m in self.module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.track_running_stats = False
                    m.running_mean = m.running_var = m.num_batches_tracked = None
        self.module.train(mode == "train")
        self.params = dict(self.module.named_parameters())
        # Detached views of the parameters: written in place (no autograd) before every pass.
        self.data = {n: p.detach() for n, p in self.params.items()}
        live = dict(net.named_buffers())
        pairs = [(b, live[n]) for n, b in self.module.named_buffers()]
        self._buffers = [b for b, _ in pairs]
        self._live_buffers = [b for _, b in pairs]
        self._stacked: Params = {}  # K stacked copies of every parameter (batched path)
        # Under vmap, torch's group norm asks whether its input is channels-last, which vmap
        # cannot answer (NotImplementedError on the CPU, where a conv on a 1-channel input
        # yields channels-last activations). Only while vmapping, such a layer gets its input
        # made contiguous first: a layout change, no value change. The loop path is untouched.
        self.vmapping = False
        for m in self.module.modules():
            if isinstance(m, nn.GroupNorm):
                m.register_forward_pre_hook(self._contiguous_under_vmap)

    def _contiguous_under_vmap(self, _module: nn.Module, args: tuple) -> tuple | None:
        return (args[0].contiguous(), *args[1:]) if self.vmapping else None

    def stacked(self, k: int) -> Params:
        """K stacked copies of every parameter, (K, *shape), by name: allocated on first use
        (and when K changes), then written in place before every batched call."""
        if not self._stacked or any(t.shape[0] != k for t in self._stacked.values()):
            self._stacked = {
                n: torch.empty((k, *d.shape), dtype=d.dtype, device=d.device)
                for n, d in self.data.items()
            }
        return self._stacked

    def load_buffers(self) -> None:
        """The live buffers, which a forward may update in place (none in train mode here)."""
        if self._buffers:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, self._live_buffers)


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
    mode: Mode = "train"
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    shadow: Shadow | None = None  # kept by the trainer across steps; made here if missing

    def __post_init__(self) -> None:
        if self.shadow is None or self.shadow.net is not self.net or self.shadow.mode != self.mode:
            self.shadow = Shadow(self.net, self.mode)
        self.names = list(self.params)

    def loss_at(self, params: Mapping[str, Tensor]) -> float:
        """L(params) on B_t."""
        with torch.no_grad():
            self._load(params)
            return float(self._forward_loss(self.shadow.module))

    def loss_and_grad(
        self, params: Mapping[str, Tensor], wrt: Sequence[str] | None = None
    ) -> tuple[float, Params]:
        """L(params) on B_t and its gradient w.r.t. the parameters named in `wrt` (all: None)."""
        loss, grads = self._loss_and_grad(params, wrt)
        return float(loss), grads

    def grad_at(self, params: Mapping[str, Tensor], wrt: Sequence[str] | None = None) -> Params:
        """grad L(params) on B_t w.r.t. the parameters named in `wrt` (all: None); no host sync."""
        return self._loss_and_grad(params, wrt)[1]

    def _loss_and_grad(
        self, params: Mapping[str, Tensor], wrt: Sequence[str] | None
    ) -> tuple[Tensor, Params]:
        names = list(params) if wrt is None else list(wrt)
        self._load(params)
        loss = self._forward_loss(self.shadow.module)
        grads = torch.autograd.grad(loss, [self.shadow.params[n] for n in names])
        return loss.detach(), dict(zip(names, grads, strict=True))

    def loss_and_grad_along(self, eta: float) -> tuple[Tensor, list[Tensor]]:
        """L(w_t - eta g_t) on B_t (a 0-dim tensor: no host sync) and its gradient w.r.t. every
        parameter, in the order of `self.names` (fresh tensors the caller may modify).

        w_t - eta g_t is written straight into the shadow (one fused pass per tensor, the same
        arithmetic as torch.add(w, g, alpha=-eta)), with no intermediate copy.
        """
        data = self.shadow.data
        with torch.no_grad():
            for n in self.names:
                torch.add(self.params[n], self.grads[n], alpha=-eta, out=data[n])
        self.shadow.load_buffers()
        loss = self._forward_loss(self.shadow.module)
        grads = torch.autograd.grad(loss, [self.shadow.params[n] for n in self.names])
        return loss.detach(), list(grads)

    def losses_and_grads_along(self, etas: Sequence[float]) -> tuple[Tensor, list[Tensor]]:
        """L(w_t - eta_k g_t) on B_t for every eta_k, as a (K,) tensor, and the gradients there
        w.r.t. every parameter, each (K, *shape), in the order of `self.names`: one call of
        torch.func.vmap(grad_and_value(L)) over the K stacked parameter sets, instead of K
        passes. The parameter sets are bitwise the loop's (each row written by the same
        torch.add(w, g, alpha=-eta)); losses and gradients equal the loop's up to fp32
        reduction order (batched kernels). No host sync.

        Noise: the generator is rewound once and vmap runs with randomness="same", so the one
        draw of each noisy layer (Algorithm 1) is shared by every eta: exactly the noise the
        loop sees after rewinding before each pass. Raises whatever vmap raises where it cannot
        run (the probe then falls back to the loop, and says so).
        """
        shadow = self.shadow
        stacked = [shadow.stacked(len(etas))[n] for n in self.names]
        with torch.no_grad():
            for k, eta in enumerate(etas):
                for n, s in zip(self.names, stacked, strict=True):
                    torch.add(self.params[n], self.grads[n], alpha=-eta, out=s[k])
        shadow.load_buffers()
        module, names = shadow.module, self.names

        def loss_of(flat: list[Tensor]) -> Tensor:
            return self._forward_loss(
                lambda x: functional_call(module, dict(zip(names, flat, strict=True)), (x,))
            )

        batched = vmap(grad_and_value(loss_of), randomness="same")
        shadow.vmapping = True
        try:
            grads, losses = batched(stacked)
        finally:
            shadow.vmapping = False
        return losses.detach(), list(grads)

    def differentiable_loss(self, params: Mapping[str, Tensor]) -> Tensor:
        """L(params) with a graph to `params` themselves, for Hessian-vector products."""
        self._load({})
        return self._forward_loss(lambda x: functional_call(self.shadow.module, dict(params), (x,)))

    def _load(self, params: Mapping[str, Tensor]) -> None:
        """The live buffers (a forward may update the copies) and `params`."""
        self.shadow.load_buffers()
        if params:
            data = self.shadow.data
            names = list(params)
            with torch.no_grad():
                torch._foreach_copy_([data[n] for n in names], [params[n] for n in names])

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


def global_norm_t(tensors: Iterator[Tensor] | Sequence[Tensor]) -> Tensor:
    """||concat(tensors)||_2 as a 0-dim float64 tensor on their device (no host sync):
    per-tensor norms in one fused call, combined in float64."""
    ts = [t.detach() for t in tensors]
    if not ts:
        return torch.zeros((), dtype=torch.float64)
    norms = torch._foreach_norm(ts)  # the fused kernel optimisers use for grad clipping
    return torch.linalg.vector_norm(torch.stack(norms).double())


def global_norm(tensors: Iterator[Tensor] | Sequence[Tensor]) -> float:
    """||concat(tensors)||_2 (see global_norm_t), with one device sync for the whole set."""
    return float(global_norm_t(tensors))
