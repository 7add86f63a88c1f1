"""The deep-linear-network task of the paper (App. A.1): regress y = A x from x ~ N(0, I)."""

from __future__ import annotations

import torch

from worker.engine.data import Dataset
from worker.engine.state import derive_seed


def gaussian_linear(n_samples: int, input_dim: int, seed: int) -> Dataset:
    """n_samples train and n_samples test pairs (x, A x), A a fixed matrix of N(0, 1) entries.

    Everything is drawn, in the order A, x_train, x_test, from one private generator seeded by
    derive_seed(seed, "gaussian_linear"): the global RNG is never touched, and the data stream is
    independent of anything else seeded from the same run seed (such as the model's init).
    """
    data_seed = derive_seed(seed, "gaussian_linear")
    gen = torch.Generator().manual_seed(data_seed)
    a = torch.randn(input_dim, input_dim, generator=gen)
    x_train = torch.randn(n_samples, input_dim, generator=gen)
    x_test = torch.randn(n_samples, input_dim, generator=gen)
    return Dataset(
        name="gaussian_linear",
        x_train=x_train,
        y_train=x_train @ a.T,
        x_test=x_test,
        y_test=x_test @ a.T,
        task="regression",
        n_outputs=input_dim,
        in_shape=(input_dim,),
        info={
            "source": "generated",
            "x": "x ~ N(0, I)",
            "target": "y = A x",
            "A": "A ~ N(0,1)",
            "seed": seed,
            "data_seed": data_seed,
            "draw_order": ["A", "x_train", "x_test"],
            "n_train": n_samples,
            "n_test": n_samples,
        },
    )
