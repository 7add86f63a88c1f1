"""CIFAR-10 from the standard python archive, read in place (nothing is extracted to disk).

The archive's batches are pickles, and a pickle can run arbitrary code when loaded; a data
directory is not trusted code, so they are read with an unpickler that can only build numpy
arrays and dtypes. The real files were written by Python 2 (hence encoding="bytes"); the
Python 3 pickle forms are accepted too, so a re-packed archive also loads.
"""

from __future__ import annotations

import codecs
import functools
import pathlib
import pickle
import tarfile
import zlib
from typing import IO, Any

import numpy as np
import torch
from numpy._core import multiarray, numeric

from worker.engine.data import DataError, Dataset

ARCHIVE_NAME = "cifar-10-python.tar.gz"
TRAIN_MEMBERS = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
TEST_MEMBER = "cifar-10-batches-py/test_batch"
# The usual per-channel statistics of the CIFAR-10 training set.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
PIXELS = 3 * 32 * 32

# Everything the batches need, under the module names numpy 1 (numpy.core) and numpy 2
# (numpy._core) write; each only builds an array, a dtype or a bytes object.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at pickle protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global but the array constructors in _ALLOWED."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays"
            ) from None


def _missing(path: pathlib.Path) -> DataError:
    return DataError(
        f"CIFAR-10 archive not found at {path}. Download it with "
        f"`landscope data download cifar10 --data-dir {path.parent}`"
    )


def _corrupt(path: pathlib.Path, what: str) -> DataError:
    return DataError(
        f"{path} is not a usable CIFAR-10 archive: {what}. Delete it and run "
        f"`landscope data download cifar10 --data-dir {path.parent}`"
    )


def _parse_batch(stream: IO[bytes], member: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, 3072) pixels, int64 (N,) labels) of one batch; ValueError names what is off."""
    try:
        batch = _ArrayUnpickler(stream, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{member}: {exc}") from exc
    except Exception as exc:  # whatever the damage, the member cannot be decoded
        raise ValueError(
            f"{member} is not a readable pickle ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{member} is not a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise ValueError(f"{member}: b'data' is not a 2-D uint8 array")
    if data.shape[1] != PIXELS:
        raise ValueError(f"{member}: rows have {data.shape[1]} values, expected {PIXELS}")
    if not (isinstance(labels, list) and all(isinstance(v, int) for v in labels)):
        raise ValueError(f"{member}: b'labels' is not a list of ints")
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(data):
        raise ValueError(f"{member}: {len(data)} images but {len(y)} labels")
    if len(y) and not (y.min() >= 0 and y.max() <= 9):
        raise ValueError(f"{member}: labels outside 0..9")
    return data, y


@functools.lru_cache(maxsize=1)
def _decode(path: pathlib.Path, size: int, mtime_ns: int) -> tuple[np.ndarray, ...]:
    """uint8 train/test pixels and labels (read-only); size and mtime invalidate the cache."""
    wanted = {*TRAIN_MEMBERS, TEST_MEMBER}
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        # One pass in archive order: a gzip stream is slow to seek backwards in.
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted:
                    fileobj = tar.extractfile(member)
                    if fileobj is None:
                        raise ValueError(f"{member.name} is not a regular file")
                    parts[member.name] = _parse_batch(fileobj, member.name)
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise _corrupt(path, str(exc) or type(exc).__name__) from exc
    absent = sorted(wanted - parts.keys())
    if absent:
        raise _corrupt(path, f"missing member(s) {', '.join(absent)}")
    arrays = (
        np.concatenate([parts[m][0] for m in TRAIN_MEMBERS]),
        np.concatenate([parts[m][1] for m in TRAIN_MEMBERS]),
        parts[TEST_MEMBER][0],
        parts[TEST_MEMBER][1],
    )
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _normalise(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, 3072), CHW order -> float32 (N, 3, 32, 32): (x / 255 - MEAN) / STD per channel."""
    x = torch.from_numpy(np.asarray(pixels, dtype=np.float32).reshape(-1, 3, 32, 32))
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return x.div_(255.0).sub_(mean).div_(std)


def load_cifar10(data_dir: pathlib.Path) -> Dataset:
    """The 50,000 train and 10,000 test images of data_dir/cifar-10-python.tar.gz, normalised.

    Train is data_batch_1..5 concatenated in order; test is test_batch. Decoded pixels are kept
    in-process (one archive), so a worker that runs several CIFAR-10 runs decompresses once.
    """
    path = pathlib.Path(data_dir).resolve() / ARCHIVE_NAME
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise _missing(path) from None
    x_train, y_train, x_test, y_test = _decode(path, stat.st_size, stat.st_mtime_ns)
    return Dataset(
        name="cifar10",
        x_train=_normalise(x_train),
        y_train=torch.tensor(y_train),
        x_test=_normalise(x_test),
        y_test=torch.tensor(y_test),
        task="classification",
        n_outputs=10,
        in_shape=(3, 32, 32),
        info={
            "source": str(path),
            "archive_bytes": stat.st_size,
            "train": "data_batch_1..5 in order",
            "test": "test_batch",
            "scaling": "x / 255, then (x - mean) / std per channel (R, G, B)",
            "mean": list(MEAN),
            "std": list(STD),
            "augmentation": "none",
            "n_train": len(y_train),
            "n_test": len(y_test),
        },
    )
