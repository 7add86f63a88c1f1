"""Engine benchmarks, as ratios measured side by side in one process.

    python bench/bench_engine.py            # full run (< ~5 min, 2 CPU cores): RESULTS.md
    python bench/bench_engine.py --quick    # smoke test (seconds); prints only

Every comparison builds its variants once, warms each up, then times them interleaved
(A B, B A, A B, ... so that neither always goes first) for several repetitions and compares
medians, so that drift in the machine's speed hits both sides alike. Reported per comparison:
the medians (raw seconds per timed segment), the ratio of the medians and the median of the
per-repetition paired ratios with its range.

1. probes off vs a plain hand-written PyTorch loop on the same model, data order and optimiser:
   target engine/plain throughput >= 0.97.
2. one landscape probe with K step sizes vs K training steps: target <= 1.1.
3. the probe suite every 16 steps vs probes off: target measured slowdown <= 1.1 x the floor
   1 + (K + n_ics)/16 (paper-protocol.md, "Cost floor"). Sharpness is off: its power iteration
   is beyond the floor (1 + 2 iters passes), so the floor does not cover it.
4. CUDA only: bf16 vs fp32 images/s on paper-vgg16 (norm batch); skipped without a CUDA device.
5. the vmap-batched landscape probe (probes.landscape.batched) vs the loop of K passes: one
   measure() each, interleaved, on the device the bench runs on (on CUDA paper-vgg16 too);
   the ratio of times and the largest difference between the two paths' values. No target:
   which is faster depends on the device (on a CPU vmap has little to gain).

    python bench/bench_engine.py --quick --only vmap    # just section 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench._engine_cases import (  # noqa: E402
    FULL,
    MODELS,
    QUICK,
    Plan,
    bench_bf16,
    bench_landscape,
    bench_plain,
    bench_suite,
    bench_vmap,
)
from bench._engine_report import HEADER, markdown, spread  # noqa: E402
from bench._machine import ROOT, describe, loadavg, publish  # noqa: E402
from bench._timing import gauged  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"


def _run_vmap(res: dict, name: str, plan: Plan, args: argparse.Namespace,
              dev: torch.device) -> None:
    r = res["vmap"][name] = gauged(bench_vmap, name, plan, args, dev)
    print(f"[5 vmap] {name}: vmap/loop paired {spread(r['paired'])}, of medians {r['ratio']:.3f}; "
          f"ms per measure {r['ms_per_measure']}; max rel diff {r['max_rel_diff']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: a few seconds, prints only")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="datasets (CIFAR-10, GPU item only); default LANDSCOPE_DATA_DIR")
    p.add_argument("--results", type=Path, default=None,
                   help=f"append the report here (default {RESULTS.relative_to(ROOT)} for full "
                   "runs; --quick writes only when given)")
    p.add_argument("--only", choices=["plain", "landscape", "suite", "gpu", "vmap"],
                   action="append",
                   help="run only these benchmarks (repeatable)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # only settable before any parallel work
        torch.set_num_interop_threads(1)
    if args.data_dir is None:
        from server.settings import get_settings

        args.data_dir = Path(get_settings().data_dir)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    plan = QUICK if args.quick else FULL
    only = set(args.only or ["plain", "landscape", "suite", "gpu", "vmap"])
    machine = describe(dev)
    machine["loadavg_at_start"] = loadavg()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(json.dumps(machine), flush=True)

    res: dict[str, Any] = {"plan": {"name": "quick" if args.quick else "full",
                                    "reps": plan.reps, "warmup": plan.warmup},
                           "plain": {}, "landscape": {}, "suite": {}, "vmap": {}}
    started = time.perf_counter()
    for name in MODELS:
        if "plain" in only:
            r = res["plain"][name] = gauged(bench_plain, name, plan, args, dev)
            print(f"[1 plain] {name}: engine/plain paired {spread(r['paired'])}, of medians "
                  f"{r['ratio']:.3f}; steps/s {r['steps_per_s']}", flush=True)
        if "landscape" in only:
            r = res["landscape"][name] = gauged(bench_landscape, name, plan, args, dev)
            print(f"[2 landscape] {name}: in loop {spread(r['paired_in_loop'])}, measure() "
                  f"{spread(r['paired_measure'])} x K steps (step {r['t_step_ms']:.2f} ms)",
                  flush=True)
        if "suite" in only:
            r = res["suite"][name] = gauged(bench_suite, name, plan, args, dev)
            print(f"[3 suite] {name}: slowdown/floor paired {spread(r['paired_over_floor'])}, of "
                  f"medians {r['measured_over_floor']:.3f} (floor {r['floor']:.3f}); per point ms "
                  f"{ {k: round(v, 2) for k, v in r['probe_ms_per_point'].items()} }", flush=True)
        if "vmap" in only:
            _run_vmap(res, name, plan, args, dev)
    if dev.type != "cuda":
        res["gpu"] = {"skipped": "no CUDA device"}
    elif "gpu" not in only:
        res["gpu"] = {"skipped": "not selected (--only)"}
    else:
        r = res["gpu"] = gauged(bench_bf16, plan, args, dev)
        print(f"[4 bf16] images/s {r['images_per_s']}, speedup {r['speedup']:.2f}", flush=True)
    if dev.type == "cuda" and "vmap" in only:
        _run_vmap(res, "paper-vgg16", plan, args, dev)
    print(f"[4 gpu] bf16: {res['gpu'].get('skipped', 'run')}")
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)

    report = markdown(res, machine, command, res["plan"]["name"])
    out = args.results or (None if args.quick else RESULTS)
    return publish(report, out, HEADER)


if __name__ == "__main__":
    sys.exit(main())
