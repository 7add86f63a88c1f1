"""What the GridEvaluator tests share: parameters as a dict (_theta), a grid's points in flat
order (_grid), a small MLP whose BatchNorm running statistics have moved away from their start
(_bn_mlp), a point along directions (_point), and the value a plain copy of the net gives in
each BN mode (_brute)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from server.spec import RunSpec
from worker.engine.models import build_model


def _theta(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def _grid(xs, ys):
    return [(a, b) for b in ys for a in xs]  # flat index iy * nx + ix


def _bn_mlp(norm: str = "batch", dtype=torch.float64, seed: int = 0):
    spec = RunSpec(model="mlp", depth=3, width=8, norm=norm, seed=seed)
    net = build_model(spec, (6,), 3, torch.Generator().manual_seed(9)).to(dtype)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # running statistics away from their (0, 1) start
        net.train()
        for _ in range(3):
            net(2.0 + 3.0 * torch.randn(16, 6, generator=g, dtype=dtype))
    x = torch.randn(20, 6, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (20,), generator=g)
    recal = 0.5 + torch.randn(16, 6, generator=g, dtype=dtype)
    return net, x, y, recal


def _point(theta, dirs, c):
    return {n: t + sum(ci * d[n] for ci, d in zip(c, dirs, strict=True)) for n, t in theta.items()}


def _brute(net, params, x, y, bs, mode, recal=None):
    """The value a plain copy gives: train mode (batch), eval mode (running), or eval mode after
    recomputing its running statistics on `recal` (momentum None, train-mode forwards)."""
    c = copy.deepcopy(net)
    with torch.no_grad():
        for n, p in c.named_parameters():
            p.copy_(params[n])
        if mode == "recalibrated":
            for m in c.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.reset_running_stats()
                    m.momentum = None
            c.train()
            for xb in recal.split(bs):
                c(xb)
        c.train(mode == "batch")
        total, hits = 0.0, 0
        for xb, yb in zip(x.split(bs), y.split(bs), strict=True):
            out = c(xb)
            total += float(F.cross_entropy(out, yb, reduction="sum"))
            hits += int((out.argmax(1) == yb).sum())
    return total / len(x), hits / len(x)
