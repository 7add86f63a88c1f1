"""The SDK's probes (landscope.Probes) on a user's own loop, against the cost floor, side by side
with the engine's own probe suite, in the engine benchmark's terms (bench/bench_engine.py #3).

    python bench/bench_sdk_probes.py            # full run (~3 min, 2 CPU cores): RESULTS.md
    python bench/bench_sdk_probes.py --quick    # smoke test (seconds); prints only

Four variants per model, built once, warmed up, then timed interleaved in one process
(bench/_timing.py): a plain hand-written loop (`plain`), the same loop with landscope.Probes
measuring the suite every 16 steps (`sdk`: landscape K=4, ICS on 2 layers, activations,
grad norm, distance; sharpness off, as in the engine bench), and the engine's Trainer with
probes off (`engine_off`) and with the same suite (`engine_suite`). Reported: each side's
slowdown over its own baseline divided by the floor 1 + (K + n_ics)/16 (paper-protocol.md,
"Cost floor"; target <= 1.1 for the SDK, as for the engine), and sdk/engine of those.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench._engine_cases import (  # noqa: E402
    FULL,
    ICS_LAYERS,
    MODELS,
    MULTIPLIERS,
    OFF,
    QUICK,
    SUITE_EVERY,
    EngineRun,
    PlainLoop,
    make_spec,
    suite_probes,
)
from bench._engine_report import spread, verdict  # noqa: E402
from bench._machine import ROOT, describe, loadavg, publish  # noqa: E402
from bench._timing import gauged, interleave, med, paired, pressure  # noqa: E402
from landscope.sdk.probes import Probes  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
HEADER = "# Benchmarks\n\nNewest run last.\n\n"
TARGET = "<= 1.1"


class SdkLoop(PlainLoop):
    """The plain loop with landscope.Probes: measure() after backward, before the step. The
    data order restarts every segment as in the plain loop; the probes' step count runs on
    (measuring at 0, 16, 32, ... of it), as in a real run."""

    def __init__(self, spec, data, device: torch.device, name: str) -> None:
        super().__init__(spec, data, device)
        self.t = 0
        self.probes = Probes(self.net, F.cross_entropy, self.opt, seed=spec.seed,
                             **suite_probes(name))

    def __call__(self, n: int) -> None:
        for step in range(n):
            idx = self.order.indices(step).to(self.device, non_blocking=True)
            x, y = self.x[idx], self.y[idx]
            loss = F.cross_entropy(self.net(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.probes.measure(self.t, x, y)
            self.t += 1
            self.opt.step()
            self.losses.append(loss.item())


def bench_sdk(name: str, plan, args: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    base = MODELS[name]
    off_spec = make_spec(base, OFF, args.device)
    engine_off = EngineRun(off_spec, args.data_dir, dev)
    engine_on = EngineRun(make_spec(base, suite_probes(name), args.device), args.data_dir, dev)
    data = engine_off.trainer.data
    plain = PlainLoop(off_spec, data, dev)
    sdk = SdkLoop(off_spec, data, dev, name)
    n = plan.suite_steps[name]
    t = interleave({"plain": (plain, n), "sdk": (sdk, n), "engine_off": (engine_off, n),
                    "engine_suite": (engine_on, n)}, plan.reps, plan.warmup, dev)
    floor = engine_on.trainer.spec.probe_cost()["floor"]

    def over(on: list[float], off: list[float]) -> dict:
        return paired(on, off, lambda a, b: a / b / floor)

    sdk_over = over(t["sdk"], t["plain"])
    engine_over = over(t["engine_suite"], t["engine_off"])
    return {
        "steps_per_segment": n, "K": len(MULTIPLIERS), "n_ics": len(ICS_LAYERS[name]),
        "floor": floor, "median_s": {k: med(v) for k, v in t.items()},
        "sdk_over_floor": med(t["sdk"]) / med(t["plain"]) / floor,
        "engine_over_floor": med(t["engine_suite"]) / med(t["engine_off"]) / floor,
        "paired_sdk_over_floor": sdk_over,
        "paired_engine_over_floor": engine_over,
        "paired_sdk_over_engine": paired(
            [a / b for a, b in zip(t["sdk"], t["plain"], strict=True)],
            [a / b for a, b in zip(t["engine_suite"], t["engine_off"], strict=True)],
            lambda a, b: a / b),
        "target": TARGET, "samples_s": t,
    }


def markdown(res: dict, machine: dict, command: str) -> str:
    m = machine
    lines = [
        f"## SDK probes - {m['date']} - {m['device']}, {m['torch_threads']} threads "
        f"({res['plan']})", "",
        f"- machine: {m['cpu']}, {m['cpu_count']} cores; torch {m['torch']}; git {m['git_head']}",
        f"- command: `{command}`; load average at start {m['loadavg_at_start']}",
        f"- suite every {SUITE_EVERY} steps: landscape K={len(MULTIPLIERS)}, ICS, activations, "
        "grad norm, distance (sharpness off); slowdown over each side's own baseline, divided "
        "by the floor 1 + (K + n_ics)/16; paired = median [min, max] per repetition", "",
        "| model | floor | SDK/plain over floor (paired) | engine over floor (paired) "
        "| SDK/engine (paired) | target | verdict | pressure |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["models"].items():
        lines.append(
            f"| {name} | {r['floor']:.3f} | {spread(r['paired_sdk_over_floor'])} "
            f"| {spread(r['paired_engine_over_floor'])} | {spread(r['paired_sdk_over_engine'])} "
            f"| {r['target']} | {verdict(r['paired_sdk_over_floor']['median'], r['target'])} "
            f"| {pressure(r)} |")
    raw = {k: {kk: vv for kk, vv in v.items() if kk != "samples_s"}
           for k, v in res["models"].items()}
    lines += ["", "<details><summary>raw results (JSON)</summary>", "", "```json",
              json.dumps(raw, default=str, indent=1), "```", "</details>", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: seconds, prints only")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--data-dir", type=Path, default=None, help="default LANDSCOPE_DATA_DIR")
    p.add_argument("--results", type=Path, default=None,
                   help="append the report here (default bench/RESULTS.md for full runs)")
    p.add_argument("--model", choices=list(MODELS), action="append", help="only these models")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default: the plan's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    if args.data_dir is None:
        from server.settings import get_settings

        args.data_dir = Path(get_settings().data_dir)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan = dataclasses.replace(plan, reps=args.reps)
    machine = describe(dev)
    machine["loadavg_at_start"] = loadavg()
    print(json.dumps(machine), flush=True)
    res: dict[str, Any] = {"plan": "quick" if args.quick else "full", "models": {}}
    started = time.perf_counter()
    for name in args.model or list(MODELS):
        r = res["models"][name] = gauged(bench_sdk, name, plan, args, dev)
        print(f"[sdk suite] {name}: SDK over floor {spread(r['paired_sdk_over_floor'])}, "
              f"engine over floor {spread(r['paired_engine_over_floor'])}, SDK/engine "
              f"{spread(r['paired_sdk_over_engine'])} (floor {r['floor']:.3f})", flush=True)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    out = args.results or (None if args.quick else RESULTS)
    return publish(markdown(res, machine, command), out, HEADER)


if __name__ == "__main__":
    sys.exit(main())
