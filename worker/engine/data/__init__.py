"""The engine's data layer: every dataset a run can train on, as tensors, plus its batch order.

A loader returns the whole dataset as tensors (all of them fit in memory, and keeping them on the
device avoids a DataLoader in the training loop); `BatchOrder` then says which rows form B_t.
Loaders are imported lazily by `load_dataset` so that a CIFAR-10 run never pays for importing
scikit-learn or mnist1d, and vice versa.

Every choice the paper leaves open (splits, normalisation constants, seeds) is recorded in
`Dataset.info`, which the run stores with its config so each figure says what it was measured on.
"""

from __future__ import annotations

import copy
import pathlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch

from worker.engine.data.batches import BatchOrder

if TYPE_CHECKING:
    from server.spec import RunSpec

__all__ = ["BatchOrder", "DataError", "Dataset", "load_dataset"]


class DataError(ValueError):
    """Data that cannot be had: a missing or corrupt file, a failed download, an unknown name.

    The message always says what to do about it, because it is shown to the user as is.
    """


@dataclass
class Dataset:
    """A whole dataset as tensors; vectors are (N, D), images (N, C, H, W)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    task: Literal["classification", "regression"]
    n_outputs: int
    in_shape: tuple[int, ...]
    info: dict[str, Any]

    def __post_init__(self) -> None:
        # Cheap invariants that catch a loader bug here rather than as a shape error mid-run.
        pairs = [("train", self.x_train, self.y_train)]
        if self.x_test is not None or self.y_test is not None:
            if self.x_test is None or self.y_test is None:
                raise ValueError(f"{self.name}: x_test and y_test must both be set or both None")
            pairs.append(("test", self.x_test, self.y_test))
        for split, x, y in pairs:
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{self.name} {split}: {x.shape[0]} inputs but {y.shape[0]} targets"
                )
            if tuple(x.shape[1:]) != tuple(self.in_shape):
                raise ValueError(
                    f"{self.name} {split}: inputs {tuple(x.shape)} != in_shape {self.in_shape}"
                )

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> Dataset:
        """A copy with every tensor on `device` (tensors already there are shared, not copied)
        and, with `dtype`, every floating-point one in that precision (labels stay integers;
        float32 data cast to float64 keeps its values exactly)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            return t.to(device, dtype) if dtype is not None and t.is_floating_point() \
                else t.to(device)

        return replace(
            self,
            x_train=move(self.x_train),
            y_train=move(self.y_train),
            x_test=move(self.x_test),
            y_test=move(self.y_test),
            info=copy.deepcopy(self.info),
        )


def load_dataset(spec: RunSpec, data_dir: pathlib.Path) -> Dataset:
    """The dataset `spec.dataset` names; only cifar10 reads `data_dir` (the rest need no files)."""
    name = spec.dataset
    if spec.plugin_dataset:  # an installed entry point of that name (worker/engine/plugins.py)
        from worker.engine.plugins import PluginError, load_plugin_dataset

        try:
            return load_plugin_dataset(spec, pathlib.Path(data_dir))
        except PluginError as exc:
            raise DataError(str(exc)) from exc
    if name == "cifar10":
        from worker.engine.data.cifar10 import load_cifar10

        return load_cifar10(pathlib.Path(data_dir))
    if name == "gaussian_linear":
        from worker.engine.data.synthetic import gaussian_linear

        return gaussian_linear(spec.n_samples, spec.input_dim, spec.seed)
    if name == "digits":
        from worker.engine.data.digits import load_digits

        return load_digits(**spec.dataset_options)  # {"size": n} at most (server/spec.py)
    if name == "mnist1d":
        from worker.engine.data.mnist1d import load_mnist1d

        return load_mnist1d()
    raise DataError(f"unknown dataset {name!r}; known: cifar10, gaussian_linear, digits, mnist1d")
