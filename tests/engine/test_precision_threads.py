"""What changes numbers is recorded and set: the environment dict, the thread policy (spec >
launcher setting > 1, restored afterwards) and the float64 option (parameters, data, probes)."""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest
import torch

from server.spec import RunSpec, SpecError, build_spec
from tests.engine.small_nets import SMALL
from worker.engine.environment import environment
from worker.engine.sink import MemorySink
from worker.engine.threads import DEFAULT_THREADS, resolve_threads, torch_threads, usable_cores
from worker.engine.trainer import Trainer

PROBES = {
    "landscape": {"every": 2, "multipliers": [0.5, 2.0]},
    "ics": {"every": 2, "layers": [2, 3]},
    "activations": {"every": 2},
    "sharpness": {"every": 2, "iters": 3},
}


def spec(model: str = "dln", **over) -> RunSpec:
    return RunSpec.model_validate({**SMALL[model], "steps": 4, "seed": 3, "device": "cpu",
                                   "eval_every": 2, "probes": PROBES, **over})


# -- the environment -------------------------------------------------------------------------


def test_the_environment_says_threads_determinism_precision_machine_and_versions():
    with torch_threads(2):
        env = environment("cpu", torch.float64)
    assert env["torch_threads"] == 2
    assert env["interop_threads"] == torch.get_num_interop_threads()
    assert env["deterministic"] is torch.are_deterministic_algorithms_enabled()
    assert env["cudnn"]["deterministic"] is torch.backends.cudnn.deterministic
    assert env["cudnn"]["benchmark"] is torch.backends.cudnn.benchmark
    assert env["dtype"] == "float64" and env["device"] == "cpu"
    assert env["isa"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu"] and env["device_name"] == env["cpu"]
    v = env["versions"]
    assert v["python"] == platform.python_version() and v["torch"] == torch.__version__
    assert v["numpy"] == np.__version__ and v["landscope"]
    assert json.loads(json.dumps(env)) == env  # JSON as it is: run.json, run.info
    assert environment()["dtype"] == str(torch.get_default_dtype()).removeprefix("torch.")


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch built without oneMKL")
@pytest.mark.parametrize("cbwr, want", [(None, "off"), ("COMPATIBLE", "COMPATIBLE")])
def test_the_environment_says_which_onemkl_branch_the_process_runs(cbwr, want):
    # oneMKL reads MKL_CBWR once, when it loads: a fresh process per setting.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    if cbwr:
        env["MKL_CBWR"] = cbwr
    code = ("import torch; from worker.engine.environment import environment; "
            "print(environment()['mkl_cbwr'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == want


def test_determinism_switches_are_read_when_called():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert environment()["deterministic"] is True
    finally:
        torch.use_deterministic_algorithms(before)
    assert environment()["deterministic"] is before


# -- threads ----------------------------------------------------------------------------------


def test_the_spec_wins_then_the_setting_then_one_thread():
    assert resolve_threads(3, 2) == 3
    assert resolve_threads(None, 2) == 2
    assert resolve_threads(None, 0) == usable_cores()
    assert resolve_threads(None, None) == DEFAULT_THREADS == 1
    with pytest.raises(ValueError):
        resolve_threads(None, -1)


def test_threads_are_a_spec_field_of_at_least_one():
    assert spec().threads is None and spec(threads=2).threads == 2
    with pytest.raises(SpecError) as err:
        build_spec({**SMALL["dln"], "threads": 0})
    assert err.value.path == "threads"


def test_a_trainer_trains_with_its_threads_and_gives_the_callers_back(tmp_path):
    outside = torch.get_num_threads()
    seen = []

    class Spy(MemorySink):
        def scalars(self, step, values):
            seen.append(torch.get_num_threads())
            super().scalars(step, values)

    for s, setting, want in ((spec(threads=2), 3, 2), (spec(), 3, 3), (spec(), None, 1)):
        seen.clear()
        t = Trainer(s, tmp_path, threads=setting)
        assert torch.get_num_threads() == outside  # building gave them back too
        t.run(Spy())
        assert set(seen) == {want}
        assert t.info["environment"]["torch_threads"] == want
        assert torch.get_num_threads() == outside


# -- precision --------------------------------------------------------------------------------


def test_float64_is_a_spec_option_and_bf16_stays_float32():
    assert spec().dtype == "float32" and spec(dtype="float64").dtype == "float64"
    with pytest.raises(SpecError) as err:
        build_spec({**SMALL["dln"], "dtype": "float16"})
    assert err.value.path == "dtype"
    with pytest.raises(SpecError, match="bf16"):
        build_spec({**SMALL["dln"], "dtype": "float64", "bf16": True})
    # bf16 autocast is CUDA's: a run pinned to the CPU is refused when submitted rather than
    # failed by the engine once a worker claims it; "auto" may land on a GPU, so it passes.
    with pytest.raises(SpecError, match="CUDA only"):
        build_spec({**SMALL["dln"], "device": "cpu", "bf16": True})
    assert build_spec({**SMALL["dln"], "device": "auto", "bf16": True}).bf16


def f32_exact(values) -> float:
    """Share of values a float32 holds exactly: 1.0 for whatever float32 arithmetic made."""
    v = np.array([x for x in values if np.isfinite(x)], dtype=np.float64)
    return float(np.mean(v.astype(np.float32).astype(np.float64) == v)) if len(v) else 1.0


@pytest.mark.parametrize("model", ["dln", "mlp"])
def test_a_float64_run_trains_and_measures_in_float64(tmp_path, model):
    t = Trainer(spec(model, dtype="float64", norm="batch"), tmp_path)
    assert all(p.dtype == torch.float64 for p in t.net.parameters())
    assert all(b.dtype == torch.float64 for b in t.net.buffers() if b.is_floating_point())
    assert t.data.x_train.dtype == torch.float64
    assert t.data.y_train.dtype == (torch.float64 if model == "dln" else torch.int64)
    sink = MemorySink()
    assert t.run(sink).status == "succeeded"
    assert all(p.grad.dtype == torch.float64 for p in t.net.parameters())
    assert t.info["environment"]["dtype"] == "float64"
    # Probe outputs: float32 arithmetic gives values a float32 holds exactly; these are not.
    for key in ("train/loss", "landscape/loss_max", "landscape/grad_dist_max",
                "ics/L2/l2", "grad/norm", "sharpness/top_eig"):
        vals = sink.values(key)
        assert vals, key
        assert f32_exact(vals) < 0.5, (key, vals)
    etas = [r.loss for recs in sink.etas["landscape"].values() for r in recs]
    assert etas and f32_exact(etas) < 0.5
    # ...while a float32 run's losses are float32 numbers.
    sink32 = MemorySink()
    Trainer(spec(model, norm="batch"), tmp_path).run(sink32)
    assert f32_exact(sink32.values("train/loss")) == 1.0


def test_float64_and_float32_agree_at_step_one_to_float32_rounding(tmp_path):
    """The same initial weights and data (float32 values, cast exactly): after one step the
    two differ by float32 rounding, relative 1e-7 per operation, not by anything else."""
    quick = {**SMALL["dln"], "depth": 25, "width": 10, "n_samples": 1000, "input_dim": 10,
             "lr": 1e-6, "steps": 2, "eval_every": 0, "device": "cpu", "norm": "batch"}
    runs = {}
    for dtype in ("float32", "float64"):
        t = Trainer(RunSpec.model_validate({**quick, "dtype": dtype}), tmp_path)
        w0 = {n: p.detach().double().clone() for n, p in t.net.named_parameters()}
        sink = MemorySink()
        t.run(sink)
        runs[dtype] = (w0, sink.values("train/loss"),
                       {n: p.detach().double() for n, p in t.net.named_parameters()})
    (w32, loss32, end32), (w64, loss64, end64) = runs["float32"], runs["float64"]
    assert all(torch.equal(w32[n], w64[n]) for n in w32)  # one start
    eps = float(torch.finfo(torch.float32).eps)
    for a, b in zip(loss32, loss64, strict=True):
        assert abs(a - b) <= 1e-4 * abs(b)  # rounding of a 25-layer product, no more
        assert a != b  # ...but rounding there is: the float64 run is not a float32 one
    # The weights after the steps: float32's rounding of the weights themselves (a few ulps
    # of the largest weight), nothing more. (Biases that BatchNorm cancels have a zero
    # gradient in exact arithmetic: float32's is rounding noise, float64's a smaller one.)
    scale = max(w.abs().max().item() for w in end64.values())
    worst = max((end32[n] - end64[n]).abs().max().item() for n in end32)
    assert 0 < worst <= 8 * eps * scale


@pytest.mark.parametrize("model", ["dln", "mlp"])
def test_the_cost_estimate_counts_float64s_eight_bytes(tmp_path, model):
    from server.cost import dataset_bytes, estimate

    s32, s64 = spec(model), spec(model, dtype="float64")
    held = Trainer(s64, tmp_path).data
    total = sum(t.nbytes for t in (held.x_train, held.y_train, held.x_test, held.y_test))
    matrix = 4 * s64.input_dim**2 if model == "dln" else 0  # A, while drawn (float32)
    assert dataset_bytes(s64) == total + matrix
    e32, e64 = estimate(s32), estimate(s64)
    assert e64.memory_mb == pytest.approx(2 * e32.memory_mb)
    assert e64.params == e32.params


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_names_its_gpu_and_trains_in_float64(tmp_path):
    t = Trainer(spec("mlp", device="cuda", dtype="float64", norm="batch"), tmp_path)
    env = t.info["environment"]
    assert env["device"].startswith("cuda") and env["cuda"] == torch.version.cuda
    assert env["device_name"] == torch.cuda.get_device_name(t.device)
    assert env["cudnn"]["benchmark"] is torch.backends.cudnn.benchmark
    assert t.run(MemorySink()).status == "succeeded"
    assert all(p.dtype == torch.float64 and p.is_cuda for p in t.net.parameters())
