"""The GPU checks of issues 12 and 15 as one prepared script, for a lent GPU machine.

    python bench/bench_gpu.py --code-rev $(git rev-parse --short HEAD)   # on a CUDA device
    python bench/bench_gpu.py --quick --device cpu                      # the same, in miniature

On a lent machine (bench/README.md, "GPU checks" says how to call it through the device tool):
1. archive: a generated CIFAR-format archive (bench/_cifar_archive.py: 50,000 + 10,000 images
   of learnable class templates; the real CIFAR-10 archive cannot be fetched there);
2. train: `landscope train --preset paper-vgg16` (both norms, the preset's probes) for 300
   steps on it, fp32; images/s, losses, probe seconds, snapshots (issue 15);
3. surface: a 51 x 51 surface of each trained VGG-16 on 2,048 samples, BN mode `batch`, as a
   worker computes it (issue 12: "in seconds");
4. grid paths: batched grid evaluation (vmap, the job's K points per call) vs the per-point
   loop on the VGG-16 (with cuDNN autotuning and bf16 beside them), and bench_surface's MLP
   (issue 12: batched >= 5x the loop);
5. bf16: the same 300 steps with bf16 autocast, and fp32 vs bf16 steps interleaved (issue 15);
6. anatomy: training steps of the engine beside a plain loop with and without its per-step
   loss read, fp32 and bf16, at batch 128 and 512 (why bf16 was no faster on the H200);
7. probe: the vmap-batched landscape probe vs the loop of K passes on VGG-16 (issue 15);
8. determinism: the plain VGG-16 at LR 0.1 trained twice with default kernels and twice with
   the spec's `deterministic: true`: bit-identical or not, and the cost; then a small Hessian
   spectrum of its snapshot twice in each kind of numerics (bench/_gpu_determinism).
Sections run in that order (what the others need first, then by importance) while the time
budget lasts; one that fails is reported with its error and the rest go on, so a lease is not
lost to one bug. The report (markdown, for bench/RESULTS.md) and the raw JSON go to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench import _gpu_sections as sec  # noqa: E402
from bench._cifar_archive import write_cifar_archive  # noqa: E402
from bench._gpu_determinism import determinism  # noqa: E402
from bench._gpu_report import markdown  # noqa: E402
from bench._machine import describe, loadavg  # noqa: E402


class Budget:
    """Seconds left for sections; a section starts only if the budget is not spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.t0 = seconds, time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> bool:
        return self.spent() < self.seconds


class SectionTimeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise SectionTimeout("the section ran past --section-limit-s")


class Sections:
    """Runs sections into one results dict: each while the budget lasts, each under a time
    limit (SIGALRM: it interrupts Python code, so a section stuck in Python, as a profiler's
    post-processing once was, ends with an error instead of the lease), and after each one the
    report so far is saved, so that a run killed from outside still returns what it measured."""

    def __init__(self, budget: Budget, limit_s: float, save: Callable[[dict], None]) -> None:
        self.res: dict[str, Any] = {}
        self.budget, self.limit_s, self.save = budget, limit_s, save

    def run(self, name: str, fn: Callable[..., dict], *args: Any) -> dict | None:
        """res[name] = fn(*args) with its seconds, or why it did not run or failed."""
        if not self.budget.left():
            self.res[name] = {"skipped": f"time budget spent ({self.budget.spent():.0f} s)"}
            print(f"[{name}] skipped: budget", flush=True)
            return None
        t0 = time.perf_counter()
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, self.limit_s)
        try:
            out = fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported, and the other sections go on
            self.res[name] = {"error": f"{type(exc).__name__}: {exc}",
                              "traceback": traceback.format_exc()[-3000:]}
            print(f"[{name}] FAILED: {type(exc).__name__}: {exc}", flush=True)
            out = None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        if out is not None:
            out["section_s"] = time.perf_counter() - t0
            self.res[name] = out
            # Whole, so that the log alone (which always comes back) holds every number.
            print(f"[{name}] done in {out['section_s']:.1f} s: {json.dumps(out, default=str)}",
                  flush=True)
        self.res["total_s"] = self.budget.spent()
        self.save(self.res)
        return out


def _archive(scale: sec.Scale, data_dir: Path) -> dict[str, Any]:
    from worker.engine.data.cifar10 import load_cifar10

    info = write_cifar_archive(data_dir, scale.per_batch, scale.n_test)
    ds = load_cifar10(data_dir)  # read back through the product's loader
    info["loaded"] = {"train": ds.n_train, "test": len(ds.x_test), "in_shape": ds.in_shape}
    return info


# --only's choices
SECTIONS = ("train", "surface", "grid", "bf16", "anatomy", "probe", "determinism")


def run_all(args: argparse.Namespace, scale: sec.Scale, dev: torch.device,
            save: Callable[[dict], None]) -> dict[str, Any]:
    s = Sections(Budget(args.budget_s), args.section_limit_s, save)
    cuda = dev.type == "cuda"
    want = set(args.only)
    s.run("archive", _archive, scale, args.data_dir)
    fp32 = None
    if want & {"train", "surface", "grid"}:  # the surfaces are of the trained VGG-16s
        fp32 = s.run("train_fp32", sec.train, scale, args, False)
    dirs = sec.run_dirs(fp32) if fp32 else {}
    for norm, run_dir in dirs.items() if "surface" in want else ():
        s.run(f"surface_{norm}", sec.surface, run_dir, scale, args, dev)
    if "grid" in want:
        s.run("grid_paths_mlp", sec.mlp_paths, scale, args, dev)  # short: first
        if "batch" in dirs:
            s.run("grid_paths_vgg16", sec.surface_paths, dirs["batch"], scale, args, dev)
    if "bf16" in want:
        if cuda:
            s.run("train_bf16", sec.train, scale, args, True)
            s.run("bf16_ratio", sec.bf16_ratio, scale, args, dev)
        else:
            s.res["train_bf16"] = s.res["bf16_ratio"] = {"skipped": "bf16 autocast needs CUDA"}
    if "anatomy" in want:
        s.run("step_anatomy", sec.step_anatomy, scale, args, dev)
    for norm in ("batch", "none") if "probe" in want else ():
        s.run(f"probe_vmap_{norm}", sec.probe_vmap, scale, args, dev, norm)
    if "determinism" in want:
        s.run("determinism", determinism, sec.vgg16_base(scale, "none"), scale.det_steps, args,
              dev)
    return s.res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="the same code in miniature (VGG-16 at 1/8 width, a small archive, "
                   "5 x 5 grids): a smoke test that runs on a CPU")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    p.add_argument("--threads", type=int, default=4, help="torch.set_num_threads (default 4)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for gpu-checks.md and gpu-checks.json (default: print only)")
    p.add_argument("--work", type=Path, default=None,
                   help="scratch folder for the archive and runs (default: a temporary one)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="start no section after this many seconds (default 480)")
    p.add_argument("--only", type=lambda v: v.split(","), default=list(SECTIONS),
                   help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: "
                   "all; the archive is always made, the fp32 training for surface and grid)")
    p.add_argument("--section-limit-s", type=float, default=None,
                   help="end a section that runs longer with an error (default: 180, quick 60)")
    p.add_argument("--code-rev", default=None,
                   help="the commit measured, where the tree travels without .git")
    args = p.parse_args(argv)
    if unknown := set(args.only) - set(SECTIONS):
        p.error(f"--only: unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    scale = sec.QUICK if args.quick else sec.FULL
    args.section_limit_s = args.section_limit_s or (60.0 if args.quick else 180.0)
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # only settable before any parallel work
        torch.set_num_interop_threads(1)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; use --device cpu (with --quick)", file=sys.stderr)
        return 2
    machine = describe(dev)
    machine["loadavg_at_start"] = loadavg()
    if args.code_rev:
        machine["git_head"] = args.code_rev
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(json.dumps(machine), flush=True)

    def save(res: dict[str, Any]) -> None:
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu-checks.md").write_text(markdown(res, machine, command, scale))
            (args.out / "gpu-checks.json").write_text(
                json.dumps({"machine": machine, "scale": scale.name, "results": res},
                           default=str, indent=1))

    with tempfile.TemporaryDirectory(prefix="landscope-gpu-") as tmp:
        args.work = args.work or Path(tmp)
        args.data_dir = args.work / "data"
        res = run_all(args, scale, dev, save)
    print("\n" + markdown(res, machine, command, scale), flush=True)
    failed = [k for k, v in res.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
