"""scikit-learn's 8x8 digits: a tiny image set that ships with scikit-learn, so VGG runs offline.

The split is fixed (a permutation seeded with SPLIT_SEED, not the run seed) so that runs with
different seeds are tested on the same images and their test accuracies are comparable.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from worker.engine.data import Dataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Split and standardised arrays (read-only: callers get copies), computed once per process."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = bunch.images.astype(np.float64) / 16.0  # pixels are 0..16
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_test = round(TEST_FRACTION * len(y))
    test, train = order[:n_test], order[n_test:]
    # One scalar mean and std from the train split only, so no test statistics leak into training.
    mean, std = float(x[train].mean()), float(x[train].std())
    x = ((x - mean) / std).astype(np.float32)[:, None, :, :]
    arrays = (x[train], y[train], x[test], y[test])
    for a in arrays:
        a.flags.writeable = False
    return (*arrays, mean, std)


def load_digits() -> Dataset:
    """(N, 1, 8, 8) float32 images, standardised with the train split's mean and std; 10 classes."""
    x_train, y_train, x_test, y_test, mean, std = _arrays()
    return Dataset(
        name="digits",
        x_train=torch.tensor(x_train),
        y_train=torch.tensor(y_train),
        x_test=torch.tensor(x_test),
        y_test=torch.tensor(y_test),
        task="classification",
        n_outputs=10,
        in_shape=(1, 8, 8),
        info={
            "source": "sklearn.datasets.load_digits",
            "scaling": "x / 16, then (x - mean) / std with the train split's scalar mean and std",
            "mean": mean,
            "std": std,
            "split": "numpy default_rng(split_seed).permutation; first test_fraction is test",
            "split_seed": SPLIT_SEED,
            "test_fraction": TEST_FRACTION,
            "n_train": len(y_train),
            "n_test": len(y_test),
        },
    )
