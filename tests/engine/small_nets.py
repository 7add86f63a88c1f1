"""The small networks the engine tests train: one of each model family, a step in
milliseconds on a CPU, with real (offline) data."""

from __future__ import annotations

SMALL = {
    "mlp": {"model": "mlp", "depth": 4, "width": 16, "dataset": "digits", "lr": 0.3,
            "batch_size": 32},
    "vgg": {"model": "vgg", "vgg_config": 11, "width": 0.125, "dataset": "digits", "lr": 0.1,
            "batch_size": 16},
    "dln": {"model": "dln", "depth": 6, "width": 6, "dataset": "gaussian_linear",
            "n_samples": 40, "input_dim": 6, "loss": "sum_squares", "lr": 1e-3,
            "batch_size": None},
}
