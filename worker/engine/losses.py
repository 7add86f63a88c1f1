"""Training objectives, as the protocol defines them."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]


def sum_squares(out: Tensor, y: Tensor) -> Tensor:
    """SUM over samples of ||f(x) - y||^2: the deep linear network's loss (not a mean)."""
    return ((out - y) ** 2).sum()


def cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over the batch (the VGG protocol)."""
    return F.cross_entropy(out, y)


LOSSES: dict[str, LossFn] = {"cross_entropy": cross_entropy, "sum_squares": sum_squares}


def correct(out: Tensor, y: Tensor) -> Tensor:
    """Number of correct predictions, as a 0-dim tensor (no device sync)."""
    return correct_per_row(out, y).sum()


def correct_per_row(out: Tensor, y: Tensor) -> Tensor:
    """Whether each row's prediction (argmax over dim 1) is the label, as a bool tensor."""
    return out.argmax(dim=1) == y


@torch.no_grad()
def evaluate(net, loss_name: str, x: Tensor, y: Tensor, batch_size: int, autocast) -> dict:
    """Loss (same reduction as training) and accuracy on a held-out set, in eval mode."""
    was_training = net.training
    net.eval()
    try:
        total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
        hits = torch.zeros((), dtype=torch.int64, device=x.device)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            with autocast():
                out = net(xb)
            if out.dtype in (torch.float16, torch.bfloat16):  # autocast's; float64 stays
                out = out.float()
            if loss_name == "cross_entropy":
                total_loss += F.cross_entropy(out, yb, reduction="sum").double()
                hits += correct(out, yb)
            else:
                total_loss += sum_squares(out, yb).double()
    finally:
        net.train(was_training)
    if loss_name == "cross_entropy":
        return {"test/loss": float(total_loss) / len(x), "test/acc": int(hits) / len(x)}
    return {"test/loss": float(total_loss)}
