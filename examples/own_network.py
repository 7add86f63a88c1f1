"""Your own network, your own training loop, recorded by Landscope.

A small residual CNN (defined here, not one of the engine's models) learns scikit-learn's
8x8 digits (bundled with scikit-learn: nothing is downloaded). Landscope records the loop's
metrics, runs the engine's probes at the training steps (the loss and gradient along the
step, the gradient norm, the distance travelled, activation histograms), measures a loss
surface around the trained weights, and the notebook client reads it all back.

    landscope up --port 8000                                # in another terminal
    python examples/own_network.py http://127.0.0.1:8000 --steps 200

Then open the dashboard (http://127.0.0.1:8000/) at the run, or read on in a notebook
(docs/python.md). Needs `pip install 'landscope[notebook]'` for the read-back (pandas).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import landscope


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU (He et al. 2016)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class DigitsResNet(nn.Module):
    def __init__(self, width: int = 16, blocks: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(*(Block(width) for _ in range(blocks)))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def digits(seed: int) -> tuple[torch.Tensor, ...]:
    """1797 images, 8x8, scaled to [0, 1]; a fixed 80/20 split."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y[order], dtype=torch.long)
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("server", help="Landscope server URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--token", help="API token, if the server has one")
    p.add_argument("--experiment", default="own-network")
    p.add_argument("--name", default="digits-resnet")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--surface-points", type=int, default=11, help="per axis")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = digits(args.seed)
    model = DigitsResNet()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    batches = torch.Generator().manual_seed(args.seed)
    config = {**vars(args), "model": "DigitsResNet(width=16, blocks=2)", "optimizer": "sgd"}
    config.pop("token")

    with landscope.init(server=args.server, token=args.token, experiment=args.experiment,
                        name=args.name, config=config, total=args.steps) as run:
        every = max(1, args.steps // 10)
        probes = landscope.Probes(model, loss_fn, optimizer, run=run,
                                  landscape={"every": every}, grad_norm={"every": 1},
                                  distance={"every": every}, activations={"every": every})
        for step in range(args.steps):
            idx = torch.randint(len(x_train), (args.batch_size,), generator=batches)
            x, y = x_train[idx], y_train[idx]
            out = model(x)
            loss = loss_fn(out, y)
            optimizer.zero_grad()
            loss.backward()
            probes.measure(step, x, y)  # at w_t, on this batch, with this gradient
            optimizer.step()
            run.log(step, {"train/loss": loss, "train/acc": (out.argmax(1) == y).float().mean()})
            if (step + 1) % every == 0 or step + 1 == args.steps:
                model.eval()
                with torch.no_grad():
                    out = model(x_test)
                    run.log(step, {"test/loss": loss_fn(out, y_test),
                                   "test/acc": (out.argmax(1) == y_test).float().mean()})
                model.train()
        probes.remove()
        # The loss surface around the trained weights: two filter-normalised random directions,
        # train-mode batch statistics (bn_mode "batch"), uploaded to the run.
        points = args.surface_points
        landscope.analyse(model, loss_fn, (x_test, y_test), kind="surface", run=run,
                          step=args.steps, bn_mode="batch",
                          x={"lo": -1, "hi": 1, "points": points},
                          y={"lo": -1, "hi": 1, "points": points})
    # Leaving the block finished the run ("failed" with the error, had anything raised).

    with landscope.Client(args.server, token=args.token) as client:
        info = client.run(run.id)
        metrics = client.metrics(run.id, keys="test/*")
        etas = client.probe_records(run.id)
        (analysis_id,) = client.analyses(run_id=run.id).id
        surface = client.analysis(analysis_id).at()
    last = metrics.sort_values("step").groupby("key").value.last()
    centre = surface.loss[points // 2, points // 2]
    print(f"run {run.id} {info['status']}: test accuracy {last['test/acc']:.3f}, "
          f"{len(etas)} landscape probe records, surface {surface.loss.shape} "
          f"(loss {centre:.3f} at the trained weights, max {np.nanmax(surface.loss):.3f})")
    return 0 if info["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
