"""Tests of worker.engine.data: loaders, the CIFAR-10 archive reader and download, BatchOrder."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from server.spec import RunSpec
from worker.engine.data import BatchOrder, DataError, Dataset, load_dataset
from worker.engine.data import digits as digits_module
from worker.engine.data import mnist1d as mnist1d_module
from worker.engine.data.cifar10 import MEAN, STD
from worker.engine.data.download import download_cifar10

# ---------------------------------------------------------------------------------------------
# A tiny CIFAR-10 archive with the real layout.

TRAIN_SIZES = (3, 2, 4, 1, 2)  # images in data_batch_1..5: unequal, so order mistakes show
TEST_SIZE = 3


def _py2(obj: object) -> bytes:
    """Pickle opcodes as Python 2's cPickle wrote the real batches (str -> bytes on load)."""
    if isinstance(obj, bytes):
        return b"T" + struct.pack("<I", len(obj)) + obj  # BINSTRING: a py2 str
    if isinstance(obj, int):
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, list):
        return b"](" + b"".join(_py2(v) for v in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    assert isinstance(obj, np.ndarray)
    assert obj.dtype == np.uint8
    # numpy's reduce: _reconstruct(ndarray, (0,), "b"), then BUILD with
    # (1, shape, dtype("u1", 0, 1) built with state (3, "|", None, None, None, -1, -1, 0),
    #  fortran=False, raw bytes).
    dtype = [b"cnumpy\ndtype\n", _py2(b"u1"), b"K\x00K\x01\x87R"]
    dtype += [b"(K\x03", _py2(b"|"), b"NNN", _py2(-1), _py2(-1), b"K\x00tb"]
    shape = [b"(", *(_py2(d) for d in obj.shape), b"t"]
    parts = [b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n(K\x00t", _py2(b"b")]
    parts += [b"\x87R(K\x01", *shape, *dtype, b"\x89", _py2(obj.tobytes()), b"tb"]
    return b"".join(parts)


def py2_pickle(obj: object) -> bytes:
    return b"\x80\x02" + _py2(obj) + b"."


def _batch(n: int, first_label: int, rng: np.random.Generator) -> dict[bytes, object]:
    return {
        b"batch_label": b"fake batch",
        b"labels": [(first_label + i) % 10 for i in range(n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{first_label}_{i}.png".encode() for i in range(n)],
    }


def write_archive(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def fake_batches() -> dict[str, dict[bytes, object]]:
    rng = np.random.default_rng(1)
    batches = {f"data_batch_{i + 1}": _batch(n, i, rng) for i, n in enumerate(TRAIN_SIZES)}
    batches["test_batch"] = _batch(TEST_SIZE, 7, rng)
    return batches


def write_fake_cifar(data_dir: Path, dump=py2_pickle) -> dict[str, dict[bytes, object]]:
    batches = fake_batches()
    # Members in a scrambled order (as in the real archive) with the extra files it holds.
    order = [
        "data_batch_4",
        "readme.html",
        "test_batch",
        "data_batch_3",
        "batches.meta",
        "data_batch_2",
        "data_batch_5",
        "data_batch_1",
    ]
    extra = {"readme.html": b"<html></html>", "batches.meta": py2_pickle({b"label_names": []})}
    write_archive(
        data_dir / "cifar-10-python.tar.gz",
        {name: extra[name] if name in extra else dump(batches[name]) for name in order},
    )
    return batches


@pytest.fixture
def cifar_dir(tmp_path: Path) -> tuple[Path, dict[str, dict[bytes, object]]]:
    return tmp_path, write_fake_cifar(tmp_path)


def expected_image(pixels: np.ndarray) -> torch.Tensor:
    x = torch.tensor(pixels, dtype=torch.float32).view(3, 32, 32) / 255
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def test_cifar10_loads_tiny_archive(cifar_dir):
    data_dir, batches = cifar_dir
    ds = load_dataset(RunSpec(dataset="cifar10"), data_dir)
    n_train = sum(TRAIN_SIZES)
    assert ds.x_train.shape == (n_train, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32
    assert ds.x_test.shape == (TEST_SIZE, 3, 32, 32)
    assert ds.y_train.dtype == torch.int64
    assert ds.n_train == n_train
    assert (ds.task, ds.n_outputs, ds.in_shape) == ("classification", 10, (3, 32, 32))
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    assert ds.y_train.tolist() == [y for b in train for y in b[b"labels"]]
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"]
    # Image 2 of data_batch_2 sits after data_batch_1's 3 images.
    torch.testing.assert_close(ds.x_train[3 + 1], expected_image(train[1][b"data"][1]))
    torch.testing.assert_close(ds.x_test[2], expected_image(batches["test_batch"][b"data"][2]))
    assert ds.info["mean"] == list(MEAN)
    assert ds.info["std"] == list(STD)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_accepts_python3_pickles(tmp_path, protocol):
    batches = write_fake_cifar(tmp_path, dump=lambda b: pickle.dumps(b, protocol=protocol))
    ds = load_dataset(RunSpec(dataset="cifar10"), tmp_path)
    torch.testing.assert_close(ds.x_test[0], expected_image(batches["test_batch"][b"data"][0]))


def test_cifar10_missing_archive_names_path_and_command(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(RunSpec(dataset="cifar10"), tmp_path)
    msg = str(err.value)
    assert str(tmp_path.resolve() / "cifar-10-python.tar.gz") in msg
    assert "landscope data download cifar10" in msg


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar10_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    batches = fake_batches()
    batches["data_batch_1"][b"data"] = _Payload(marker)
    write_archive(
        tmp_path / "cifar-10-python.tar.gz",
        {name: pickle.dumps(b, protocol=2) for name, b in batches.items()},
    )
    with pytest.raises(DataError, match="refused to load"):
        load_dataset(RunSpec(dataset="cifar10"), tmp_path)
    assert not marker.exists()


def test_cifar10_corrupt_archives(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_fake_cifar(tmp_path)
    archive.write_bytes(archive.read_bytes()[:200])  # truncated
    with pytest.raises(DataError, match="not a usable CIFAR-10 archive"):
        load_dataset(RunSpec(dataset="cifar10"), tmp_path)
    write_archive(archive, {"data_batch_1": py2_pickle(fake_batches()["data_batch_1"])})
    with pytest.raises(DataError, match=r"missing member.*data_batch_2"):
        load_dataset(RunSpec(dataset="cifar10"), tmp_path)


def test_download_from_file_url(tmp_path, cifar_dir):
    src = cifar_dir[0] / "cifar-10-python.tar.gz"
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    dest = tmp_path / "dest"
    got = download_cifar10(dest, url=src.as_uri(), progress=False, md5=md5)
    assert got == dest / "cifar-10-python.tar.gz"
    assert got.read_bytes() == src.read_bytes()
    # Already there with the right md5: no network needed.
    assert download_cifar10(dest, url="file:///nonexistent", progress=False, md5=md5) == got
    assert load_dataset(RunSpec(dataset="cifar10"), dest).n_train == sum(TRAIN_SIZES)


def test_download_bad_md5_or_url_leaves_nothing(tmp_path, cifar_dir):
    src = cifar_dir[0] / "cifar-10-python.tar.gz"
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="md5"):
        download_cifar10(dest, url=src.as_uri(), progress=False, md5="0" * 32)
    assert list(dest.iterdir()) == []
    with pytest.raises(DataError, match="could not download"):
        download_cifar10(dest, url=(tmp_path / "absent").as_uri(), progress=False)
    assert list(dest.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Generated and bundled datasets


def test_gaussian_linear_is_a_seeded_linear_map():
    spec = RunSpec(dataset="gaussian_linear", loss="sum_squares", n_samples=50, input_dim=4, seed=3)
    before = torch.get_rng_state()
    ds = load_dataset(spec, Path("/nonexistent"))
    assert torch.equal(torch.get_rng_state(), before)
    assert ds.x_train.shape == ds.y_train.shape == ds.x_test.shape == (50, 4)
    assert ds.y_train.dtype == torch.float32
    assert (ds.task, ds.n_outputs, ds.in_shape) == ("regression", 4, (4,))
    # Recover A by least squares: the residual is float32 rounding only, on train and test alike.
    a_t = torch.linalg.lstsq(ds.x_train.double(), ds.y_train.double()).solution
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        torch.testing.assert_close(x.double() @ a_t, y.double(), rtol=1e-5, atol=1e-5)
    assert ds.info["seed"] == 3
    assert ds.info["A"] == "A ~ N(0,1)"
    again = load_dataset(spec, Path("/nonexistent"))
    assert torch.equal(again.x_train, ds.x_train)
    assert torch.equal(again.y_test, ds.y_test)
    other = load_dataset(spec.model_copy(update={"seed": 4}), Path("/nonexistent"))
    assert not torch.equal(other.x_train, ds.x_train)


def test_digits():
    ds = load_dataset(RunSpec(dataset="digits"), Path("/nonexistent"))
    assert ds.x_train.shape == (1438, 1, 8, 8)
    assert ds.x_test.shape == (359, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32
    assert ds.y_train.dtype == torch.int64
    assert set(ds.y_train.tolist()) == set(range(10))
    assert ds.n_outputs == 10
    assert abs(ds.x_train.mean().item()) < 1e-4
    assert abs(ds.x_train.std().item() - 1) < 1e-3
    assert ds.info["std"] > 0
    again = load_dataset(RunSpec(dataset="digits", seed=5), Path("/nonexistent"))
    assert torch.equal(again.x_test, ds.x_test)  # the split does not depend on the run seed
    again.x_train.zero_()  # callers own their tensors: the cache is not shared
    fresh = load_dataset(RunSpec(dataset="digits"), Path("."))
    assert not torch.equal(fresh.x_train, again.x_train)


def test_mnist1d_offline_and_keeps_global_rng():
    mnist1d_module._generate.cache_clear()  # make this test pay for the generation
    np_before, py_before = np.random.get_state(), random.getstate()
    torch_before = torch.get_rng_state()
    ds = load_dataset(RunSpec(dataset="mnist1d"), Path("/nonexistent"))
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0]
    assert np.array_equal(np_after[1], np_before[1])
    assert np_after[2:] == np_before[2:]
    assert random.getstate() == py_before
    assert torch.equal(torch.get_rng_state(), torch_before)
    assert ds.x_train.shape == (4000, 40)
    assert ds.x_test.shape == (1000, 40)
    assert ds.x_train.dtype == torch.float32
    assert ds.y_test.dtype == torch.int64
    assert set(ds.y_train.tolist()) == set(range(10))
    assert ds.in_shape == (40,)
    again = load_dataset(RunSpec(dataset="mnist1d"), Path("/nonexistent"))
    assert torch.equal(again.x_train, ds.x_train)
    assert again.x_train is not ds.x_train


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset(RunSpec.model_construct(dataset="imagenet"), Path("."))


def test_dataset_to_and_invariants():
    ds = load_dataset(RunSpec(dataset="digits"), Path("."))
    moved = ds.to(torch.device("cpu"))
    assert moved is not ds
    assert moved.x_train.device.type == "cpu"
    assert moved.info == ds.info
    with pytest.raises(ValueError, match="targets"):
        Dataset("bad", torch.zeros(3, 2), torch.zeros(2), None, None, "regression", 1, (2,), {})


# ---------------------------------------------------------------------------------------------
# BatchOrder


def test_batch_order_epochs_are_permutations():
    order = BatchOrder(n=10, batch_size=3, seed=7)
    assert order.batches_per_epoch == 3
    epochs = []
    for e in range(3):
        rows = torch.cat([order.indices(e * 3 + k) for k in range(3)])
        assert rows.dtype == torch.int64
        assert len(set(rows.tolist())) == 9
        assert set(rows.tolist()) <= set(range(10))
        epochs.append(rows)
    assert not torch.equal(epochs[0], epochs[1])
    same = BatchOrder(n=10, batch_size=3, seed=7)
    assert all(torch.equal(same.indices(s), order.indices(s)) for s in range(9))
    other = BatchOrder(n=10, batch_size=3, seed=8)
    assert any(not torch.equal(other.indices(s), order.indices(s)) for s in range(9))


def test_batch_order_is_stateless_in_step_and_private():
    before = torch.get_rng_state()
    walked = BatchOrder(n=100, batch_size=16, seed=1)
    path = [walked.indices(s) for s in range(1000)]
    jumped = BatchOrder(n=100, batch_size=16, seed=1)
    for s in (999, 3, 500, 0):
        assert torch.equal(jumped.indices(s), path[s])
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("batch_size", [None, 10, 50])
def test_batch_order_full_batch(batch_size):
    order = BatchOrder(n=10, batch_size=batch_size, seed=0)
    assert order.batches_per_epoch == 1
    assert torch.equal(order.indices(0), torch.arange(10))
    assert torch.equal(order.indices(123), torch.arange(10))


def _digits(**options) -> Dataset:
    return load_dataset(RunSpec(dataset="digits", dataset_options=options), Path("."))


def test_digits_resized_to_32_is_standardised_and_deterministic():
    ds = _digits(size=32)
    assert ds.x_train.shape == (1438, 1, 32, 32) and ds.x_test.shape == (359, 1, 32, 32)
    assert ds.in_shape == (1, 32, 32)
    assert ds.info["size"] == 32 and "bilinear" in ds.info["resize"]
    assert abs(ds.x_train.mean().item()) < 1e-4
    assert abs(ds.x_train.std().item() - 1) < 1e-3
    assert torch.equal(_digits(size=32).x_train, ds.x_train)
    plain = _digits()
    assert torch.equal(ds.y_train, plain.y_train) and torch.equal(ds.y_test, plain.y_test)
    # The same images as at 8x8: undo the 8x8 scaling, resize, apply the 32x32 scaling.
    raw = plain.x_test[:, 0].double() * plain.info["std"] + plain.info["mean"]
    mine = (digits_module.resize(raw.numpy(), 32) - ds.info["mean"]) / ds.info["std"]
    assert np.allclose(mine, ds.x_test[:, 0].numpy(), atol=1e-5)
    assert _digits(size=8).info == plain.info and "resize" not in plain.info


def test_resize_of_constant_and_linear_images_is_the_analytic_bilinear():
    const = np.full((2, 8, 8), 0.37)
    assert np.allclose(digits_module.resize(const, 32), 0.37, rtol=0, atol=1e-15)
    # A ramp along the width, f(j) = j: with align_corners=False output pixel i samples the
    # source at (i + 0.5) * 8 / n - 0.5, clamped to the first and last pixel centres [0, 7].
    ramp = np.tile(np.arange(8.0), (1, 8, 1))
    for n in (32, 20):
        got = digits_module.resize(ramp, n)
        want = np.clip((np.arange(n) + 0.5) * 8 / n - 0.5, 0, 7)
        assert got.shape == (1, n, n)
        assert np.allclose(got, np.broadcast_to(want, (1, n, n)), rtol=0, atol=1e-12)
    assert digits_module.resize(ramp, 8) is ramp  # the native size is left alone
