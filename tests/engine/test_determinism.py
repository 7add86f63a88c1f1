"""The spec's `deterministic` switch: torch's deterministic algorithms on for the run and the
caller's switches put back, recorded with the run, the same numbers as a default run on a CPU
(where kernels are deterministic already), and no op of the engine that lacks a deterministic
version (the activations probe counts without torch.histc). Whether the switch makes a GPU
run come back bit for bit is measured by bench/bench_gpu.py's `determinism` section."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from tests.engine.test_probe_machinery import probe
from tests.engine.test_trainer import ALL_PROBES, bits, no_timings, spec
from worker.engine.determinism import CUBLAS_WORKSPACE, deterministic_algorithms
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def switches() -> tuple[bool, bool, bool, bool]:
    cudnn = torch.backends.cudnn
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn.deterministic, cudnn.benchmark)


@pytest.fixture
def restore_switches():
    before = switches()
    yield before
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:]


def test_on_sets_every_switch_inside_and_puts_the_caller_s_back(restore_switches):
    torch.backends.cudnn.benchmark = True  # a caller that autotunes
    before = switches()
    with deterministic_algorithms(True, CPU):
        assert switches() == (True, False, True, False)
    assert switches() == before
    with pytest.raises(KeyError), deterministic_algorithms(True, CPU):
        raise KeyError("the run failed")
    assert switches() == before  # also after an error


def test_off_touches_nothing(restore_switches):
    torch.use_deterministic_algorithms(True, warn_only=True)  # the process chose this itself
    before = switches()
    with deterministic_algorithms(False, CPU):
        assert switches() == before
    assert switches() == before


def test_on_cuda_the_cublas_workspace_is_fixed_unless_the_process_chose_one(
        monkeypatch, restore_switches):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # so that the undo removes ours too
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    with deterministic_algorithms(True, CPU):
        pass
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # a CPU run needs none
    with deterministic_algorithms(True, CUDA):  # only a device name: no CUDA call is made
        pass
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic_algorithms(True, CUDA):
        pass
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


@pytest.mark.parametrize("model", ["mlp", "vgg"])
def test_a_deterministic_run_records_it_and_equals_the_default_run_on_cpu(
        tmp_path, model, restore_switches):
    """Every probe on, the switches on while it builds and trains (an op without a
    deterministic version would raise), recorded, and the caller's again afterwards."""
    before = switches()
    series = {}
    for on in (False, True):
        t = Trainer(spec(model, norm="batch", probes=ALL_PROBES, deterministic=on), tmp_path)
        sink = MemorySink()
        assert t.run(sink).status == "succeeded"
        env = t.info["environment"]
        assert env["deterministic"] is on and env["cudnn"]["deterministic"] is on
        assert switches() == before
        series[on] = no_timings(sink.series)
    assert series[True].keys() == series[False].keys()
    for key, values in series[False].items():
        assert bits(values.values()) == bits(series[True][key].values()), key


def test_device_histograms_under_deterministic_algorithms_equal_histc_s(restore_switches):
    """torch.histc has no deterministic CUDA kernel, so under deterministic algorithms the
    device path counts from a sort: the same counts as histc, also at every bin edge, for
    non-finite values and out of range, in float32 and float64."""
    p = probe()
    g = torch.Generator().manual_seed(5)
    tensors = []
    for dtype in (np.float32, np.float64):
        starts = torch.from_numpy(p._edges(np.dtype(dtype)).starts)
        ulp = torch.nextafter(starts, torch.full_like(starts, -math.inf))
        edgy = torch.cat([starts, ulp, torch.tensor([3.0, -3.0, 3.5, -7.0], dtype=starts.dtype),
                          torch.randn(5000, generator=g, dtype=starts.dtype) * 2])
        edgy[::17] = math.nan
        edgy[1::19] = math.inf
        edgy[2::23] = -math.inf
        tensors.append(edgy)
    plain = p.summarize(tensors, "torch")
    with deterministic_algorithms(True, CPU):
        sorted_counts = p.summarize(tensors, "torch")
    for a, b in zip(plain, sorted_counts, strict=True):
        for key in ("counts", "underflow", "overflow", "nonfinite"):
            assert a[key] == b[key], key
    assert sum(plain[0]["counts"]) > 0
