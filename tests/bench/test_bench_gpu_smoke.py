"""bench/bench_gpu.py, the GPU checks of issues 12 and 15, runs its whole code path on a CPU
(--quick: VGG-16 at 1/8 width, a small generated archive, 5 x 5 grids) so that the script a lent
GPU machine runs once is known to work before the lease; its generated CIFAR-format archive is
read by the product's loader and is learnable; its verdicts judge only GPU runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench._cifar_archive import write_cifar_archive
from bench._gpu_report import markdown
from bench._gpu_sections import FULL
from worker.engine.data.cifar10 import load_cifar10

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu-checks")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--quick", "--device", "cpu",
         "--threads", "1", "--out", str(out), "--code-rev", "abc1234"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    return proc, out


def test_quick_run_passes_every_section_on_a_cpu(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    raw = json.loads((out / "gpu-checks.json").read_text())
    res = raw["results"]
    assert raw["machine"]["git_head"] == "abc1234"
    assert res["archive"]["loaded"] == {"train": 320, "test": 64, "in_shape": [3, 32, 32]}
    runs = res["train_fp32"]["runs"]
    assert sorted(name.split("-")[1] for name in runs) == ["batch", "none"]
    for run in runs.values():
        assert run["status"] == "succeeded" and run["steps"] == 4
        assert run["nonfinite_losses"] == 0 and run["images_per_s"] > 0
        assert "snap-00000004.pt" in run["snapshots"]  # the surface's step
        assert {"landscape", "ics", "activations"} <= run["probe_s"].keys()
    for norm in ("batch", "none"):
        s = res[f"surface_{norm}"]
        assert s["points"] == s["written"] == 25 and s["nonfinite"] == 0 and s["step"] == 4
        assert s["group"] == 8  # the CPU's group
        assert s["loss_min"] <= s["centre_loss"] <= s["loss_max"]
        p = res[f"probe_vmap_{norm}"]
        assert max(p["max_rel_diff"].values()) < 1e-4  # the two probe paths agree
    grid = res["grid_paths_vgg16"]
    # fp32 paths on the same batches agree (autotuning picks other kernels, not other
    # arithmetic); larger batches change BatchNorm's statistics; no bf16 on a CPU
    rel = grid["max_rel_diff_loss"]
    assert set(rel) == {"vmap", "loop, eval batch 64", "loop, cudnn autotune",
                        "vmap, cudnn autotune", "loop, channels last"}
    # the arithmetic of a point: each of the quick evaluation set's images through the 1/8-wide
    # VGG-16, 2 x the multiply-adds of its 3x3 convolutions (32x32 maps, halved per pool) and
    # its classifier
    grid = res["grid_paths_vgg16"]
    assert grid["flops_per_point"] == grid["eval_samples"] * vgg_flops(0.125)
    assert set(grid["tflops"]) == {"loop", *rel} and all(v > 0 for v in grid["tflops"].values())
    assert max(v for k, v in rel.items() if "eval batch" not in k) < 1e-5
    assert 0 < rel["loop, eval batch 64"] < 0.5
    assert set(res["grid_paths_mlp"]["norms"]) == {"batch", "none"}
    anatomy = res["step_anatomy"]
    for batch in ("128", "512"):  # fp32 only on a CPU
        assert set(anatomy[batch]) == {"engine fp32", "plain fp32",
                                       "plain fp32, no per-step read"}
        assert all(v["images_per_s"] > 0 for v in anatomy[batch].values())
    assert res["train_bf16"] == {"skipped": "bf16 autocast needs CUDA"}
    det = res["determinism"]
    assert det["steps"] == 3 and det["cost"] > 0
    for kind, on in (("default", False), ("deterministic", True)):
        r = det[kind]
        # On a CPU both kinds come back bit for bit: only a GPU can tell them apart
        assert r["identical"] and r["first_differing_step"] is None, kind
        assert r["status"] == ["succeeded"] * 2 and r["environment"]["deterministic"] is on
        spectra = det["spectrum"][kind]
        assert spectra["identical"] and len(spectra["top"][0]) == 2, kind
        assert all(s > 0 for s in spectra["seconds"])


def vgg_flops(width: float) -> int:
    """Forward FLOPs of one 32x32 image through CIFAR VGG-16 at `width`, by hand."""
    from server.spec import VGG_CONFIGS, RunSpec

    widths = iter(RunSpec(model="vgg", vgg_config=16, width=width,
                          dataset="cifar10").layer_widths())
    flops, channels, side = 0, 3, 32
    for c in VGG_CONFIGS[16]:
        if c == "M":
            side //= 2
            continue
        out = next(widths)
        flops += 2 * out * channels * 9 * side * side
        channels = out
    return flops + 2 * channels * side * side * 10


def test_quick_report_names_every_section_and_judges_nothing_on_a_cpu(quick_run):
    _, out = quick_run
    report = (out / "gpu-checks.md").read_text()
    for heading in ("GPU checks of issues 12 and 15 (quick)", "### Issue 15", "### Issue 12",
                    "Batched grid evaluation vs the per-point loop", "Landscape probe (K = 4)",
                    "cuDNN autotuning", "Training steps of the VGG-16",
                    "Determinism: the preset's plain VGG-16",
                    "The same for an analysis: a Hessian spectrum"):
        assert heading in report
    assert "not judged (not a GPU)" in report
    assert "| met |" not in report and "MISSED" not in report


def test_cuda_asked_without_cuda_says_so_and_exits_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "no CUDA device here" in proc.stderr


def test_an_unknown_section_is_named_and_exits_2():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--only",
                           "surface,sufrace", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "unknown sections ['sufrace']" in proc.stderr


def test_generated_archive_reads_as_cifar10_and_is_learnable(tmp_path):
    info = write_cifar_archive(tmp_path, per_batch=200, n_test=100, seed=3)
    ds = load_cifar10(tmp_path)
    assert (ds.n_train, len(ds.x_test), ds.in_shape) == (1000, 100, (3, 32, 32))
    archive = tmp_path / "cifar-10-python.tar.gz"
    assert info["train"] == 1000 and info["bytes"] == archive.stat().st_size
    counts = np.bincount(ds.y_train.numpy(), minlength=10)
    assert (counts == 100).all()  # balanced classes
    # Class templates: the nearest train-class mean labels the test images far above chance.
    x, y = ds.x_train.flatten(1).numpy(), ds.y_train.numpy()
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    xt = ds.x_test.flatten(1).numpy()
    pred = ((xt[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == ds.y_test.numpy()).mean() > 0.9
    # The same seed writes the same images.
    other = tmp_path / "again"
    write_cifar_archive(other, per_batch=200, n_test=100, seed=3)
    assert bool((load_cifar10(other).x_train == ds.x_train).all())


def _cuda_result(loop_over_vmap: float, grid_s: float) -> dict:
    spread = {"median": loop_over_vmap, "min": loop_over_vmap, "max": loop_over_vmap}
    surface = {"grid_s": grid_s, "points_per_s": 2601 / grid_s, "prepare_s": 0.1,
               "setup_s": 1.0, "eval_samples": 2048, "eval_batch": 128, "vmap": True,
               "fallback": None, "loss_min": 0.1, "loss_max": 9.0, "nonfinite": 0}
    return {"surface_none": surface, "surface_batch": surface,
            "grid_paths_vgg16": {"paired": spread, "eval_samples": 2048, "eval_batch": 128,
                                 "ms_per_point": {"loop": 1.0, "vmap": 1.0}, "group": 64,
                                 "max_rel_diff_loss": {"vmap": 0.0}}}


CUDA_MACHINE = {"date": "d", "cpu": "c", "cpu_count": 16, "ram_gib": 128, "gpu": "H200",
                "cuda": "13.0", "cudnn_tf32": True, "matmul_tf32": False, "device": "cuda",
                "python": "3.12", "torch": "2.11", "torch_threads": 4, "git_head": "x",
                "engine_code_sha256": "y", "loadavg_at_start": "0"}


@pytest.mark.parametrize(("ratio", "grid_s", "grid_verdict", "time_verdict"), [
    (7.0, 12.0, "met", "met"), (3.0, 75.0, "**MISSED**", "**MISSED**"),
    (7.0, 59.95, "met", "**MISSED**"),  # preparing the step counts: 0.1 s more is too much
])
def test_gpu_verdicts_follow_the_issue_goals(ratio, grid_s, grid_verdict, time_verdict):
    report = markdown(_cuda_result(ratio, grid_s), CUDA_MACHINE, "cmd", FULL)
    vgg_row = next(line for line in report.splitlines() if line.startswith("| VGG-16, norm"))
    assert vgg_row.rstrip(" |").endswith(grid_verdict)
    surface_row = next(line for line in report.splitlines()
                       if line.startswith(f"| none | {grid_s:.2f} |"))
    assert surface_row.rstrip(" |").endswith(time_verdict)
    assert "- data: not run" in report  # a section that did not run says so


def test_sections_save_after_each_and_end_one_that_runs_too_long():
    """A section stuck in Python ends with an error at its limit and the next one runs; the
    results so far are saved after every section (a run killed from outside keeps them)."""
    import time

    from bench.bench_gpu import Budget, Sections

    saved: list[list[str]] = []
    s = Sections(Budget(60.0), limit_s=0.3, save=lambda res: saved.append(sorted(res)))

    def stuck() -> dict:
        while True:
            time.sleep(0.01)

    assert s.run("first", lambda: {"x": 1})["x"] == 1
    assert s.run("stuck", stuck) is None
    assert s.run("after", lambda: {"y": 2})["y"] == 2
    assert "SectionTimeout" in s.res["stuck"]["error"]
    assert saved == [["first", "total_s"], ["first", "stuck", "total_s"],
                     ["after", "first", "stuck", "total_s"]]


def test_the_plain_loop_reads_the_same_losses_with_or_without_a_per_step_read(tmp_path):
    import torch

    from bench._engine_cases import OFF, EngineRun, PlainLoop, make_spec

    cpu = torch.device("cpu")
    spec = make_spec({"model": "mlp", "depth": 2, "width": 8, "dataset": "digits"}, OFF, "cpu",
                     batch_size=32)
    data = EngineRun(spec, tmp_path, cpu).trainer.data
    each, once = PlainLoop(spec, data, cpu), PlainLoop(spec, data, cpu, sync=False)
    each(5)
    once(5)
    assert len(each.losses) == 5 and each.losses == once.losses  # bit for bit
