"""Which training rows form minibatch B_t: a pure function of (seed, step).

The order is stateless in the step so that a run resumed from a checkpoint at step t sees exactly
the batches it would have seen, and it draws from private generators so that nothing else (model
init, noisy-BN noise, probes) can shift it, and it shifts nothing else.
"""

from __future__ import annotations

import torch

from worker.engine.state import derive_seed


class BatchOrder:
    """Deterministic data order from the seed, stateless in the step (resumed runs see the same).

    Epoch e = step // batches_per_epoch is a fresh random permutation of the n rows, drawn with
    torch.randperm from a generator seeded by derive_seed(seed, "batch-order", e); batch k of the
    epoch is its slice [k*bs, (k+1)*bs). The incomplete last batch is dropped so that every step's
    loss is over the same number of samples. A batch size of None, or >= n, means full batch:
    every row, in natural order, at every step.
    """

    def __init__(self, n: int, batch_size: int | None, seed: int):
        if n < 1:
            raise ValueError(f"need at least one training sample, got n={n}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (full batch), got {batch_size}")
        self.n = n
        self.seed = seed
        self.full_batch = batch_size is None or batch_size >= n
        self.batch_size: int = n if batch_size is None or self.full_batch else batch_size
        self.batches_per_epoch: int = n // self.batch_size
        # Consecutive steps share an epoch: keep its permutation rather than redraw it per step.
        self._epoch = -1
        self._perm = torch.arange(n)

    def indices(self, step: int) -> torch.Tensor:
        """The int64 CPU row indices of B_step (a fresh tensor the caller may modify)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, k = divmod(step, self.batches_per_epoch)
        return self._permutation(epoch)[k * self.batch_size : (k + 1) * self.batch_size].clone()

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self.full_batch:
            return self._perm
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "batch-order", epoch))
            self._perm = torch.randperm(self.n, generator=gen)
            self._epoch = epoch
        return self._perm
