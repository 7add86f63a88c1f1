"""Full-batch GD on a quadratic through the whole engine (Trainer, data, model, sharpness
probe): the stability threshold the edge of stability is measured against (Cohen et al. 2021).

A one-layer DLN (W, no bias) on gaussian_linear with the sum-of-squares loss is linear
regression: L(W) = sum_n ||W x_n - y_n||^2, a quadratic whose Hessian (in vec(W)) is
2 (I kron X^T X), so its sharpness is 2 lambda_max(X^T X) at every W. GD with step size eta
multiplies the error along the top eigenvector by (1 - eta * sharpness) each step: it converges
for eta < 2 / sharpness and diverges for eta > 2 / sharpness.
"""

from __future__ import annotations

import pytest
import torch

from server.spec import RunSpec
from worker.engine.data import load_dataset
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer

BASE = {"model": "dln", "depth": 1, "width": 5, "dataset": "gaussian_linear", "n_samples": 30,
        "input_dim": 5, "loss": "sum_squares", "batch_size": None, "dtype": "float64",
        "eval_every": 0, "seed": 2, "device": "cpu", "on_nonfinite": "continue",
        "probes": {"landscape": {"every": 0}, "ics": {"every": 0}, "activations": {"every": 0},
                   "sharpness": {"every": 50, "max_iters": 50, "tol": 0.0}}}
STEPS = 200


def top_sharpness(tmp_path) -> float:
    """2 lambda_max(X^T X) of the run's training inputs, by a dense eigensolver."""
    x = load_dataset(RunSpec.model_validate({**BASE, "lr": 1.0}), tmp_path).x_train.double()
    return 2 * float(torch.linalg.eigvalsh(x.T @ x)[-1])


def train(lr: float, tmp_path) -> MemorySink:
    sink = MemorySink()
    Trainer(RunSpec.model_validate({**BASE, "lr": lr, "steps": STEPS}), tmp_path).run(sink)
    return sink


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_gd_on_a_quadratic_is_stable_exactly_below_two_over_the_sharpness(factor, tmp_path):
    top = top_sharpness(tmp_path)
    sink = train(factor * 2 / top, tmp_path)
    # The probe reads the known top eigenvalue at every probed step (the Hessian is constant).
    for value in sink.series["sharpness/top_eig"].values():
        assert value == pytest.approx(top, rel=1e-8)
    loss = [sink.series["train/loss"][t] for t in range(STEPS)]
    if factor < 1:
        # Every eigendirection i contracts by |1 - 1.8 lambda_i / lambda_max| < 1 per step.
        assert loss[-1] < 1e-6 * loss[0]
    else:
        # The top direction grows by |1 - 2.2| = 1.2 per step, the loss by 1.44: after 200
        # steps it is at least 1e20 times the start (1.44^200 ~ 1e31, less the other modes).
        assert loss[-1] > 1e20 * loss[0]
        assert all(b > a for a, b in zip(loss[-50:], loss[-49:], strict=False))
