"""How many grid points one batched (vmap) evaluation call takes: the analysis job's group K.

On the CPU K is GROUP (8): there the loop is the default path and K only sets how many points
share one loss reduction. On a GPU a vmap call costs about the same whether it carries 8 points
or 64 when the network is small (its time goes to launching kernels and to vmap's dispatch, not
to arithmetic), so K is as large as memory allows, up to MAX_GROUP:

    K = the largest power of two <= min(MAX_GROUP, share * free memory / bytes per point)

further cut to a divisor of the analysis's chunk size, so that the chunks a surface is cut into
are whole groups and no point is evaluated twice (evaluate.py, "Determinism across chunks").
K is chosen once, when a step is prepared, and travels with the directions to every worker that
evaluates a chunk, so all chunks of an analysis use the same groups whatever their GPU's free
memory; it is recorded in the analysis's values (`evaluation.group`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # evaluate.py needs nothing from here at run time
    from worker.engine.geometry.evaluate import GridEvaluator

GROUP = 8  # the CPU's group (a GPU's depends on its free memory and the chunk size)
MAX_GROUP = 64  # past this a group saves little and a chunk (64 points by default) is one call
MEMORY_SHARE = 0.5  # of the free device memory, for one call's activations and stacked weights


def pow2_floor(n: int) -> int:
    """The largest power of two <= n (n >= 1)."""
    return 1 << (max(1, n).bit_length() - 1)


def group_size(free_bytes: int, point_bytes: int, chunk_points: int,
               cap: int = MAX_GROUP, share: float = MEMORY_SHARE) -> int:
    """K for a device with `free_bytes` free, when one more point of a call needs
    `point_bytes`, for chunks of `chunk_points` grid points (see the module docstring)."""
    if point_bytes <= 0 or chunk_points < 1:
        raise ValueError("point_bytes and chunk_points must be positive")
    fits = int(share * free_bytes) // point_bytes
    divides = chunk_points & -chunk_points  # the largest power of two dividing the chunk size
    return max(1, min(pow2_floor(max(1, fits)), pow2_floor(cap), divides))


def choose_group(evaluators: Sequence[GridEvaluator], grid_points: int, chunk_points: int) -> int:
    """The job's K: GROUP unless a grid of several points is evaluated by vmap on a GPU, where
    the evaluators' largest need per point sets it (the test set's batches may be larger)."""
    ev = evaluators[0]
    if not (ev.vmap and ev.device.type == "cuda" and grid_points > 1):
        return GROUP
    need = max(e.point_bytes() for e in evaluators)
    free, _ = torch.cuda.mem_get_info(ev.device)
    return group_size(free, need, chunk_points)
