"""scikit-learn's 8x8 digits: a tiny image set that ships with scikit-learn, so VGG runs offline.

The split is fixed (a permutation seeded with SPLIT_SEED, not the run seed) so that runs with
different seeds are tested on the same images and their test accuracies are comparable.

`size` (the spec's `dataset_options.size`, validated in server/spec.py) resizes the 8x8 images
to size x size once at load, bilinearly (torch.nn.functional.interpolate, align_corners=False,
no antialiasing), before the standardisation. At 32x32 VGG's five 2x2 pools act as on CIFAR-10
(32 -> 1) instead of two being skipped on a 1x1 map. Bilinear interpolation is deterministic
on CPU and its weights sum to 1, so a constant image stays that constant; the mean and std are
then taken from the resized train split, so the inputs are standardised at every size.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from worker.engine.data import Dataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2
NATIVE_SIZE = 8


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) images to (N, size, size), bilinear with align_corners=False, in float64."""
    if size == x.shape[-1] and size == x.shape[-2]:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[:, None]
    out = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear",
                                          align_corners=False, antialias=False)
    return out[:, 0].numpy()


@functools.lru_cache(maxsize=4)
def _arrays(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Split and standardised arrays (read-only: callers get copies), computed once per process
    and size."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = resize(bunch.images.astype(np.float64) / 16.0, size)  # pixels are 0..16
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


def load_digits(size: int = NATIVE_SIZE) -> Dataset:
    """(N, 1, size, size) float32 images (8x8 unless resized), standardised with the train
    split's mean and std; 10 classes."""
    x_train, y_train, x_test, y_test, mean, std = _arrays(int(size))
    info = {
        "source": "sklearn.datasets.load_digits",
        "scaling": "x / 16, then (x - mean) / std with the train split's scalar mean and std",
        "mean": mean,
        "std": std,
        "split": "numpy default_rng(split_seed).permutation; first test_fraction is test",
        "split_seed": SPLIT_SEED,
        "test_fraction": TEST_FRACTION,
        "n_train": len(y_train),
        "n_test": len(y_test),
        "size": int(size),
    }
    if size != NATIVE_SIZE:
        info["resize"] = (f"8x8 -> {size}x{size} after x / 16, before the standardisation: "
                          "torch interpolate, bilinear, align_corners=False, no antialias")
    return Dataset(
        name="digits",
        x_train=torch.tensor(x_train),
        y_train=torch.tensor(y_train),
        x_test=torch.tensor(x_test),
        y_test=torch.tensor(y_test),
        task="classification",
        n_outputs=10,
        in_shape=(1, size, size),
        info=info,
    )
