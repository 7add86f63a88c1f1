"""Loss (and accuracy) of a network at grid points theta + sum_i c_i d_i, on an evaluation set.

`GridEvaluator` never runs the caller's network: it evaluates a private copy (bn_modes.EvalCopy)
set up for the analysis's BatchNorm mode, so the caller's parameters, buffers, noise generator
and the global RNG are left bit-identical. The loss at a point is the mean over ALL evaluation
samples of the per-sample loss (every batch's per-sample losses summed in float64, over the
sample count: the average of per-batch means weighted by batch size); for sum_squares that is
the mean of ||f(x) - y||^2. Accuracy (fraction correct, argmax) for cross-entropy classifiers.

Several points per call. In `batch` and `running` mode on an accelerator, points are evaluated
in groups of `max_batched_points`: one torch.func.vmap of functional_call over the group's
stacked parameter sets per evaluation batch (BatchNorm in train mode carries no running
statistics in the copy, so each set normalises with its own batch statistics, and nothing is
written in place). Where vmap cannot run the evaluator falls back to the loop and says why
(`fallback`). In `recalibrated` mode every point needs its own in-place recalibration pass: a
loop. On the CPU the loop is the default (`use_vmap` None): there the stacked kernels and the
layout copies vmap adds cost 2-3x the plain loop for the 6 x 128 MLP (bench/bench_surface.py),
while on a GPU one call for K points is what fills the device.

Determinism across chunks. A point's value must not depend on how a surface was cut into
worker tasks (a surface cut into chunks equals the single-task surface bit for bit). Batched
kernels (a stacked matmul) may round a row differently depending on the other rows and the
group's size, so a group's composition is fixed by the grid, not by the call: `evaluate_range`
evaluates the whole aligned groups [jK, (j+1)K) of flat grid indices that cover the requested
range (at most 2(K-1) extra points per chunk) and every vmap call has exactly K points (the
grid's last group is padded by repeating its last point; the analysis job cuts its chunks into
the same aligned groups itself). The loop runs its points' forwards one by one but sums their
losses in one call per group of K (on the CPU a dozen small reductions per point cost a tenth of
a small MLP's forward; stacked, they cost half as much), so its groups are aligned alike.
Noise (noisy BatchNorm) is re-seeded before every point (the loop) or group (vmap with
randomness "same", which gives every point of the group the same draws): the same point always
sees the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from server.analysis_spec import BN_MODES
from worker.engine.geometry.bn_modes import EvalCopy
from worker.engine.geometry.point_writer import PointWriter
from worker.engine.state import derive_seed

Params = dict[str, Tensor]


@dataclass(frozen=True)
class PointValue:
    loss: float
    acc: float | None  # fraction correct (classification), else None


def eval_subset(n_train: int, samples: int | None, seed: int) -> Tensor:
    """Row indices of the evaluation set: the first `samples` of a seeded permutation of the
    training set (all of it, permuted, for None), the same for every run of an experiment that
    shares the seed and the dataset. Permuted rather than sorted so that evaluation batches are
    random mixes, like training batches (a class-sorted dataset would give BatchNorm
    single-class batch statistics)."""
    g = torch.Generator().manual_seed(derive_seed(seed, "eval-subset"))
    perm = torch.randperm(n_train, generator=g)
    return perm if samples is None else perm[: min(samples, n_train)]


LossSum = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor | None]]


def _loss_sum(loss_name: str) -> LossSum:
    """f(out, y, classify) -> (summed per-sample loss in float64, number correct or None), for
    outputs of shape (*lead, N, C) against the N targets: one value per leading index (the K
    points of a vmapped group), a scalar without. The mean is taken over all samples at the end.

    Called once per point on the outputs of every evaluation batch concatenated, not once per
    batch: on the CPU a dozen small reductions per batch cost a third of a 128-sample forward.
    """
    def cross_entropy(out: Tensor, y: Tensor, classify: bool) -> tuple[Tensor, Tensor | None]:
        # log-sum-exp minus the label's logit: F.cross_entropy's value at a fraction of its cost
        # on the CPU, where reductions over a short last dim (10 classes) vectorise badly:
        # one max reduction gives both the shift of the log-sum-exp and the argmax (the first
        # maximum on a tie, as argmax); the rest is elementwise. 0.93 -> 0.72 ms for 8 x 2,048
        # x 10 (2 threads) against logsumexp plus argmax. A non-finite maximum shifts by 0
        # instead, as torch.logsumexp does, so an overflowed logit gives an infinite loss.
        out = _wide(out)
        top, pred = out.max(dim=-1)
        shift = top.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
        lse = (out - shift.unsqueeze(-1)).exp().sum(dim=-1).log() + shift  # differentiable
        label = out.gather(-1, y.expand(out.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        loss = (lse - label).sum(dim=-1, dtype=torch.float64)
        return loss, ((pred == y).sum(dim=-1) if classify else None)

    def sum_squares(out: Tensor, y: Tensor, classify: bool) -> tuple[Tensor, Tensor | None]:
        sq = (_wide(out) - y) ** 2
        return sq.flatten(start_dim=sq.dim() - y.dim()).sum(dim=-1, dtype=torch.float64), None

    fns = {"cross_entropy": cross_entropy, "sum_squares": sum_squares}
    if loss_name not in fns:
        raise ValueError(f"unknown loss {loss_name!r}; use one of {sorted(fns)}")
    return fns[loss_name]


def _wide(out: Tensor) -> Tensor:
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


def _cat(outs: list[Tensor], dim: int) -> Tensor:
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=dim)


class GridEvaluator:
    """Loss/accuracy of `net` at grid points, in one BatchNorm mode (see the module docstring).

    x, y: the evaluation set, cut into consecutive batches of `batch_size` (None: one batch);
    recal_x: the recalibration inputs (recalibrated mode; default x); noise_seed: the seed of
    the private noise generators (noisy BatchNorm in train-mode passes); use_vmap: batch
    `max_batched_points` points per call (None: on accelerators, not on the CPU).
    """

    def __init__(
        self, net: nn.Module, loss_name: str | LossSum, x: Tensor, y: Tensor, *, bn_mode: str,
        batch_size: int | None, recal_x: Tensor | None = None, classify: bool,
        max_batched_points: int = 8, noise_seed: int = 0, use_vmap: bool | None = None,
    ) -> None:
        if bn_mode not in BN_MODES:
            raise ValueError(f"unknown bn_mode {bn_mode!r}; use one of {list(BN_MODES)}")
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"need a non-empty evaluation set: {len(x)} inputs, {len(y)} targets")
        if max_batched_points < 1:
            raise ValueError("max_batched_points must be at least 1")
        self.copy = EvalCopy(net, bn_mode, noise_seed)
        self.module = self.copy.module
        self.names = list(self.copy.params)
        first = next(iter(self.copy.params.values()))
        self.device, self.dtype = first.device, first.dtype
        bs = len(x) if batch_size is None else batch_size
        x, y = x.to(self.device), y.to(self.device)
        self.batches = list(zip(x.split(bs), y.split(bs), strict=True))
        self.y = y
        self.n = len(x)
        recal = x if recal_x is None else recal_x.to(self.device)
        if bn_mode == "recalibrated" and len(recal) == 0:
            raise ValueError("recalibrated mode needs a non-empty recalibration set")
        self.recal_batches = list(recal.split(bs)) if bn_mode == "recalibrated" else []
        self.bn_mode = bn_mode
        # A name, or a LossSum of the caller's own (the SDK's analyse: a user's loss function).
        self.loss_sum = loss_name if callable(loss_name) else _loss_sum(loss_name)
        # Accuracy of a classifier trained with cross-entropy (as losses.evaluate reports it).
        self.classify = classify and (callable(loss_name) or loss_name == "cross_entropy")
        # Group size K: the points of one vmap call, or of one loss reduction in the loop.
        if use_vmap is None:
            use_vmap = self.device.type != "cpu"
        self.vmap = use_vmap and bn_mode != "recalibrated"
        self.group = max_batched_points
        self.fallback: str | None = None  # why vmap was given up, if it was
        self._stacked: list[Tensor] = []
        self._out_buffer: Tensor | None = None  # the loop's group outputs (_group_buffer)

    def set_group(self, k: int) -> None:
        """Evaluate K points per call from now on (the analysis job chooses K on a GPU)."""
        if k < 1:
            raise ValueError("a group needs at least one point")
        self.group = k
        self._stacked, self._out_buffer = [], None

    def point_bytes(self) -> int:
        """Device memory one more point of a vmap group needs, measured on an accelerator:
        the peak of one forward of the largest evaluation batch (the activations a vmapped
        op holds per point), plus a stacked copy of the parameters and the point's outputs.
        Nothing is changed: the private copy runs in its mode, noise rewound, no grad."""
        if self.device.type != "cuda":
            raise RuntimeError("point_bytes measures CUDA memory")
        xb = max((b for b, _ in self.batches), key=len)
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.copy.rewind()
        with torch.no_grad():
            out = self.module(xb)
        peak = torch.cuda.max_memory_allocated(self.device) - before
        params = sum(t.numel() * t.element_size() for t in self.copy.params.values())
        outputs = out[0].numel() * out.element_size() * self.n
        del out
        return peak + params + outputs

    # -- grid points --------------------------------------------------------------------------

    def evaluate(self, theta: Mapping[str, Tensor], dirs: Sequence[Mapping[str, Tensor]],
                 coords: Sequence[Sequence[float]]) -> list[PointValue]:
        """Values at theta + sum_i coords[p][i] * dirs[i] for every p, in consecutive groups of
        K = max_batched_points from the start of `coords` (see evaluate_range for chunks)."""
        theta_l, dirs_l = self._lists(theta, dirs)
        if any(len(c) != len(dirs_l) for c in coords):
            raise ValueError(f"every point needs {len(dirs_l)} coordinates, one per direction")
        loop: tuple | None = None  # the loop's target and writer, made when first needed
        stacked_writer = PointWriter(theta_l, dirs_l)
        out: list[PointValue] = []
        k = self.group
        for start in range(0, len(coords), k):
            group = list(coords[start : start + k])
            if self.vmap and self.fallback is None:
                try:
                    out.extend(self._group_vmap(stacked_writer, group, k))
                    continue
                except Exception as e:  # vmap has no batching rule for some op: loop instead
                    self.fallback = f"{type(e).__name__}: {e}"
            loop = loop or self._loop_writer(theta_l, dirs_l)
            out.extend(self._group_loop(*loop, group))
        return out

    def evaluate_range(self, theta: Mapping[str, Tensor], dirs: Sequence[Mapping[str, Tensor]],
                       grid_coords: Sequence[Sequence[float]], indices: range) -> list[PointValue]:
        """Values at the flat grid indices `indices` of a grid whose points are `grid_coords`
        (all of them, in flat order), independent bit for bit of how the grid is cut into
        ranges: the aligned groups covering `indices` are evaluated whole."""
        if indices.step != 1 or indices.start < 0 or indices.stop > len(grid_coords):
            raise ValueError(f"indices {indices} are not a range of the {len(grid_coords)} points")
        if len(indices) == 0:
            return []
        k = self.group
        lo = indices.start // k * k
        hi = min(-(-indices.stop // k) * k, len(grid_coords))
        values = self.evaluate(theta, dirs, grid_coords[lo:hi])
        return values[indices.start - lo : indices.stop - lo]

    def _lists(self, theta: Mapping[str, Tensor], dirs: Sequence[Mapping[str, Tensor]]
               ) -> tuple[list[Tensor], list[list[Tensor]]]:
        def cast(t: Tensor) -> Tensor:
            return t.detach().to(device=self.device, dtype=self.dtype)

        return ([cast(theta[n]) for n in self.names],
                [[cast(d[n]) for n in self.names] for d in dirs])

    def _loop_writer(self, theta: list[Tensor], dirs: list[list[Tensor]]
                     ) -> tuple[list[Tensor], PointWriter]:
        """The target of the per-point writes and their writer: the copy's flat parameter
        buffer, with theta and the directions flattened alike, when it has one
        (bn_modes._flatten), else the parameter tensors themselves. The same elementwise ops
        either way: the same values."""
        flat = self.copy.flat
        if flat is None:
            return list(self.copy.params.values()), PointWriter(theta, dirs)

        def cat(ts: list[Tensor]) -> list[Tensor]:
            return [torch.cat([t.reshape(-1) for t in ts])]

        return [flat], PointWriter(cat(theta), [cat(d) for d in dirs])

    def _group_loop(self, target: list[Tensor], writer: PointWriter,
                    group: list[Sequence[float]]) -> list[PointValue]:
        """The group's points one forward at a time; their losses summed in one call.

        Each batch's output is copied into the evaluator's group buffer and freed at once,
        rather than kept until the group's end. Keeping them made the CPU loop slower: for the
        6 x 128 MLP on 2,048 samples, 1.24 x plain forwards with BN and 1.28 x without, against
        1.06 x and 1.18 x with the buffer (median of 6 fresh processes each, Intel Xeon, 2
        threads; no page faults either way). Presumably small outputs kept alive between
        forwards move where the allocator puts each forward's large intermediates. The buffer
        holds the same values, in the same shape, as stacking the outputs would: the same
        losses, bit for bit.
        """
        cp = self.copy
        outs: Tensor | None = None
        with torch.no_grad():
            for j, c in enumerate(group):
                writer.write(target, c)
                if self.bn_mode == "recalibrated":
                    cp.recalibrate(self.recal_batches)
                cp.rewind()
                start = 0
                for xb, _ in self.batches:
                    out = self.module(xb)
                    if outs is None:
                        outs = self._group_buffer(out)[: len(group)]
                    outs[j, start : start + len(out)].copy_(out)
                    start += len(out)
                    del out  # freed before the next forward allocates
            assert outs is not None
            loss, hits = self.loss_sum(outs, self.y, self.classify)
        return self._values(loss, hits, len(group))

    def _group_buffer(self, out: Tensor) -> Tensor:
        """(K, n, *out's trailing shape) in out's dtype: made once, reused by every group."""
        shape = (self.group, self.n, *out.shape[1:])
        buf = self._out_buffer
        if buf is None or buf.shape != shape or buf.dtype != out.dtype:
            buf = self._out_buffer = torch.empty(shape, dtype=out.dtype, device=out.device)
        return buf

    def _group_vmap(self, writer: PointWriter, group: list[Sequence[float]], k: int
                    ) -> list[PointValue]:
        if len(self._stacked) != len(writer.theta):
            self._stacked = [torch.empty((k, *t.shape), dtype=t.dtype, device=t.device)
                             for t in writer.theta]
        stacked = self._stacked
        padded = group + [group[-1]] * (k - len(group))  # every call has K points
        writer.write_stacked(stacked, padded)
        module, names = self.module, self.names

        def one(flat: list[Tensor], xb: Tensor) -> Tensor:
            return functional_call(module, dict(zip(names, flat, strict=True)), (xb,))

        batched = vmap(one, in_dims=(0, None), randomness="same")
        self.copy.rewind()
        self.copy.vmapping = True
        try:
            with torch.no_grad():
                outs = [batched(stacked, xb) for xb, _ in self.batches]  # each (K, B, ...)
        finally:
            self.copy.vmapping = False
        with torch.no_grad():
            loss, hits = self.loss_sum(_cat(outs, 1), self.y, self.classify)
        return self._values(loss, hits, len(group))  # the padding's values dropped

    def _values(self, loss: Tensor, hits: Tensor | None, count: int) -> list[PointValue]:
        """The first `count` points' values from a group's summed losses and hit counts."""
        tl = loss.tolist()
        hl = [0] * len(tl) if hits is None else hits.tolist()
        return [PointValue(loss=tl[j] / self.n, acc=hl[j] / self.n if self.classify else None)
                for j in range(count)]

    # -- differentiable loss, gradient ----------------------------------------------------------

    def loss_fn_of_params(self, theta: Mapping[str, Tensor]) -> Callable[[Params], Tensor]:
        """A differentiable L(params) on the whole evaluation set (summed batch losses over the
        sample count), for Hessian-vector products and gradients at theta.

        The BatchNorm state is fixed when the closure is made: batch mode normalises each batch
        with its own statistics (differentiated through, as in training); running mode reads the
        snapshot's statistics; recalibrated mode recalibrates once at theta and then holds those
        statistics constant (the Hessian of the eval-mode loss with theta's statistics).
        Noise, if any, is re-seeded at every call: L is a deterministic function of params.
        """
        cp = self.copy
        if self.bn_mode == "recalibrated":
            theta_l, _ = self._lists(theta, [])
            PointWriter(theta_l, []).write(list(cp.params.values()), ())
            cp.recalibrate(self.recal_batches)
        buffers = cp.buffers()  # frozen: later evaluations may recalibrate the copy
        module, loss_sum, batches, n = self.module, self.loss_sum, self.batches, self.n

        def loss(params: Params) -> Tensor:
            cp.rewind()
            total: Tensor | None = None
            for xb, yb in batches:
                out = functional_call(module, {**buffers, **params}, (xb,))
                part = loss_sum(out, yb, False)[0]
                total = part if total is None else total + part
            assert total is not None
            return total / n

        return loss

    def gradient(self, theta: Mapping[str, Tensor]) -> Params:
        """The gradient of the full evaluation-set loss at theta, by parameter name."""
        params = {n: theta[n].detach().to(device=self.device, dtype=self.dtype).clone()
                  .requires_grad_(True) for n in self.names}
        loss = self.loss_fn_of_params(theta)(params)
        grads = torch.autograd.grad(loss, list(params.values()))
        return {n: g.detach() for n, g in zip(self.names, grads, strict=True)}
