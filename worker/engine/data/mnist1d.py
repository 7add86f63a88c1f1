"""MNIST-1D (Greydanus 2020): 40-sample 1-D signals in 10 classes, generated offline.

The mnist1d package's `get_dataset` downloads a pickle; we call its generator `make_dataset` with
the default arguments instead, so nothing touches the network. make_dataset reseeds numpy's and
Python's global RNGs (its `set_seed`), so we save and restore both around it: loading data must
not change any other random stream of the process.
"""

from __future__ import annotations

import copy
import functools
import random
import threading
from importlib.metadata import version

import numpy as np
import torch

from worker.engine.data import Dataset

# Generation swaps process-global RNG state; serialise it so two threads cannot interleave.
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _generate() -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """The arrays (read-only: callers get copies) and the generator arguments, once per process."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    with _LOCK:
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            raw = make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
    arrays = {
        "x": raw["x"].astype(np.float32),
        "y": raw["y"].astype(np.int64),
        "x_test": raw["x_test"].astype(np.float32),
        "y_test": raw["y_test"].astype(np.int64),
    }
    for a in arrays.values():
        a.flags.writeable = False
    used = {k: v for k, v in args.__dict__.items() if k != "url"}  # url: unused, we generate
    return arrays, used


def load_mnist1d() -> Dataset:
    """(N, 40) float32 signals (already standardised by the generator), int64 labels, 10 classes."""
    arrays, args = _generate()
    return Dataset(
        name="mnist1d",
        x_train=torch.tensor(arrays["x"]),
        y_train=torch.tensor(arrays["y"]),
        x_test=torch.tensor(arrays["x_test"]),
        y_test=torch.tensor(arrays["y_test"]),
        task="classification",
        n_outputs=10,
        in_shape=(int(arrays["x"].shape[1]),),
        info={
            "source": "mnist1d.data.make_dataset(get_dataset_args()), generated offline",
            "mnist1d_version": version("mnist1d"),
            "args": copy.deepcopy(args),
            "split": "the generator's own (train_split of the shuffled samples)",
            "n_train": int(arrays["x"].shape[0]),
            "n_test": int(arrays["x_test"].shape[0]),
        },
    )
