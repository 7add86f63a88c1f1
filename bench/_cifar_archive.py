"""A generated archive in CIFAR-10's format, for benchmarks that must run the CIFAR-10 code path
where the real archive cannot be fetched (a lent GPU machine reaches no network).

The real `cifar-10-python.tar.gz` holds `cifar-10-batches-py/data_batch_1..5` and `test_batch`:
pickles (protocol 2) of dicts with b"data" (uint8, N x 3072, channel-major) and b"labels"
(a list of ints). This writes the same layout, so `load_cifar10` reads it exactly as it reads
the real one. The images are not noise: each class has a smooth colour template (a random 4 x 4
x 3 pattern, upsampled to 32 x 32) and every image is its class's template plus pixel noise, so a
network can learn them and a loss curve means something. Throughput does not depend on pixel
values; convergence speed does, so it is reported, never compared with CIFAR-10's.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = 5
NOISE_STD = 48.0  # pixel noise around a class template (0..255 scale)


def _templates(rng: np.random.Generator) -> np.ndarray:
    """(10, 3, 32, 32) float class templates: a coarse 4 x 4 colour pattern, upsampled."""
    coarse = rng.uniform(40.0, 215.0, size=(10, 3, 4, 4))
    return coarse.repeat(8, axis=2).repeat(8, axis=3)


def _images(labels: np.ndarray, templates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = templates[labels] + rng.normal(0.0, NOISE_STD, size=(len(labels), 3, 32, 32))
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8).reshape(len(labels), 3 * 32 * 32)


def _batch(name: str, labels: np.ndarray, templates: np.ndarray,
           rng: np.random.Generator) -> bytes:
    return pickle.dumps({
        b"batch_label": f"generated {name}".encode(),
        b"labels": [int(v) for v in labels],
        b"data": _images(labels, templates, rng),
        b"filenames": [f"generated_{name}_{i}.png".encode() for i in range(len(labels))],
    }, protocol=2)


def write_cifar_archive(data_dir: Path, per_batch: int = 10_000, n_test: int = 10_000,
                        seed: int = 0) -> dict[str, object]:
    """Write data_dir/cifar-10-python.tar.gz (5 x per_batch train images, n_test test images,
    balanced classes in a seeded order) and say what was written."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    templates = _templates(rng)
    members = {}
    for i in range(TRAIN_BATCHES):
        labels = rng.permutation(np.arange(per_batch) % 10)
        members[f"data_batch_{i + 1}"] = _batch(f"data_batch_{i + 1}", labels, templates, rng)
    members["test_batch"] = _batch("test_batch", rng.permutation(np.arange(n_test) % 10),
                                   templates, rng)
    members["batches.meta"] = pickle.dumps(
        {b"label_names": [f"class{i}".encode() for i in range(10)]}, protocol=2)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ARCHIVE
    # compresslevel 1: pixel noise barely compresses, and level 9 would take a minute of a lease.
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return {"path": str(path), "bytes": path.stat().st_size,
            "train": TRAIN_BATCHES * per_batch, "test": n_test, "seed": seed,
            "noise_std": NOISE_STD, "seconds": round(time.perf_counter() - t0, 2)}
