"""A probe context as Trainer._measure builds one, for tests that call probes directly."""

from __future__ import annotations

import torch

from worker.engine.probes import ProbeContext
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer


def context_at(t: Trainer, step: int = 2, mode: str = "train"
               ) -> tuple[ProbeContext, torch.Tensor]:
    """(context at `step`, that step's training loss) after `step` real training steps, so
    that running statistics and the noise stream have moved away from their start."""
    t.run(MemorySink(), max_steps=step)
    x, y = t.batch(step)
    t.noise.mark_step_start()
    loss = t.loss_fn(t.net(x), y)
    t.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ctx = ProbeContext(
        step=step, net=t.net, params={n: p.detach() for n, p in t.params.items()},
        grads={n: p.grad for n, p in t.params.items()}, x=x, y=y, loss_fn=t.loss_fn,
        lr=t.spec.lr, optimizer=t.optimizer, noise=t.noise, mode=mode,
    )
    return ctx, loss
