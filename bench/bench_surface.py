"""Cost of a loss surface against plain forward passes, as ratios timed side by side.

    python bench/bench_surface.py            # full run (~6 min on 2 quiet CPU cores): RESULTS.md
    python bench/bench_surface.py --quick    # smoke test (seconds, a 5 x 5 grid); prints only

Issue 12's goal: a 21 x 21 surface of the 6 x 128 MLP (mnist1d, with BatchNorm and without) on
2,048 evaluation samples costs at most 1.2 x 441 forward passes of those 2,048 samples through
the same net. Per norm:

- plain: forwards of the evaluation set (in batches of --batch-size) through a copy of the
  net in the mode the surface evaluates in (train mode: BatchNorm mode `batch`), under no_grad;
- surface, loop: GridEvaluator.evaluate over the 441 grid points, one point at a time;
- surface, vmap 8: the same in groups of 8 points under torch.func.vmap.

Both surfaces include everything a chunk task does per point (writing theta + a d1 + b d2, the
forwards, the loss and accuracy sums); building the evaluator (a copy of the net) is timed once,
apart. The ratio is surface / plain; the goal applies to the path the evaluator takes by default
on the device (use_vmap None: the loop on the CPU, vmap on a GPU), marked "(default)".

Two ways, both reported:
1. In one process, interleaved segments of the grid (bench/_timing.py): the variants see the
   same bursts of a shared machine, but each runs on a heap the others shaped.
2. Fresh processes, interleaved (`fresh_processes`): each variant alone in its process, as a
   worker runs chunk tasks; rounds of (plain, surface) pairs, judged round by round.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench._machine import ROOT, describe, loadavg, publish  # noqa: E402
from bench._timing import _sync, gauged, interleave, med, paired, pressure  # noqa: E402
from server.analysis_spec import AnalysisSpec  # noqa: E402
from server.spec import RunSpec  # noqa: E402
from worker.engine.data import load_dataset  # noqa: E402
from worker.engine.geometry.directions import orthogonalize, random_direction  # noqa: E402
from worker.engine.geometry.evaluate import GridEvaluator, eval_subset  # noqa: E402
from worker.engine.geometry.group_size import choose_group  # noqa: E402
from worker.engine.models import build_model  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
GOAL = 1.2
SLICE = 24  # grid points per timed segment: 3 vmap groups of 8
CHUNK_POINTS = AnalysisSpec.model_fields["chunk_points"].default  # an analysis's default chunk
NORMS = ("batch", "none")


def _grid(points: int) -> list[tuple[float, float]]:
    xs = [-1.0 + 2.0 * i / (points - 1) for i in range(points)]
    return [(a, b) for b in xs for a in xs]  # flat index iy * nx + ix


def _setup(norm: str, args: argparse.Namespace, dev: torch.device) -> tuple:
    """The net at initialisation (seed 0), the evaluation set, theta, the two directions and
    the grid: the same in every process."""
    spec = RunSpec(model="mlp", depth=6, width=128, norm=norm, dataset="mnist1d", seed=0)
    data = load_dataset(spec, args.data_dir)
    net = build_model(spec, data.in_shape, data.n_outputs, torch.Generator(device=dev)).to(dev)
    idx = eval_subset(data.n_train, args.samples, seed=0)
    x, y = data.x_train[idx].to(dev), data.y_train[idx].to(dev)
    theta = {n: p.detach().clone() for n, p in net.named_parameters()}
    d1 = random_direction(theta, 0, "d1")
    dirs = [d1, orthogonalize(random_direction(theta, 0, "d2"), d1)]
    return net, x, y, theta, dirs, _grid(args.points)


def bench_norm(norm: str, args: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    net, x, y, theta, dirs, grid = _setup(norm, args, dev)
    t0 = time.perf_counter()
    default_vmap = dev.type != "cpu"  # GridEvaluator's use_vmap=None
    loop, vm = (GridEvaluator(net, "cross_entropy", x, y, bn_mode="batch",
                              batch_size=args.batch_size, classify=True, use_vmap=v)
                for v in (False, True))
    # Points per call: 8, or with group None (bench_gpu) what an analysis job would choose.
    group = getattr(args, "group", 8) or choose_group([vm], len(grid), CHUNK_POINTS)
    for ev in (loop, vm):
        ev.set_group(group)
    evaluators = {
        f"surface, {f'vmap {group}' if ev.vmap else 'loop'}"
        + (" (default)" if ev.vmap == default_vmap else ""): ev for ev in (loop, vm)
    }
    build_s = (time.perf_counter() - t0) / len(evaluators)
    plain_net = copy.deepcopy(net).train()
    batches = x.split(args.batch_size)

    # Segments: consecutive slices of the flat grid of SLICE points (a multiple of the vmap
    # group, as the job's chunks are), cycled through `passes` times; each variant evaluates
    # the same slice in the same repetition, so per-segment ratios pair like with like. Short
    # segments let both sides of a ratio see the same bursts of a shared machine.
    per = group * -(-SLICE // group)  # whole groups: SLICE for 8, one group for 64
    slices = [grid[i : i + per] for i in range(0, len(grid), per)]

    def cycling(fn):
        done = [0]

        def run(_n: int) -> None:
            fn(slices[done[0] % len(slices)])
            done[0] += 1
        return run

    def plain(points: list) -> None:
        with torch.no_grad():
            for _ in points:
                for xb in batches:
                    plain_net(xb)

    def surface(ev: GridEvaluator):
        return lambda points: ev.evaluate(theta, dirs, points)

    # Each path is timed against plain forwards in a pairing of its own: interleaved with the
    # vmap path, whose large stacked allocations are freed just before, the loop's segments
    # began with fresh page faults that plain ones never saw (the first published run measured
    # the loop at 1.27 x plain that way against 1.02 x when timed alone).
    reps = len(slices) * args.passes
    times: dict[str, list[float]] = {}
    plain_times: dict[str, list[float]] = {}
    for name, ev in evaluators.items():
        pair = interleave({"plain": (cycling(plain), 0), name: (cycling(surface(ev)), 0)},
                          reps, args.warmup * len(slices), dev)
        times[name], plain_times[name] = pair[name], pair["plain"]
    times["plain"] = [min(a, b) for a, b in zip(*plain_times.values(), strict=True)]
    out: dict[str, Any] = {"points": len(grid), "group": group, "samples": len(x),
                           "batch_size": args.batch_size,
                           "evaluator_build_s": build_s, "segments": reps,
                           "surface_s": {k: sum(v) / args.passes for k, v in times.items()},
                           "times": times, "plain_times": plain_times, "ratio": {},
                           "paired": {}}
    for name, ev in evaluators.items():
        out["ratio"][name] = sum(times[name]) / sum(plain_times[name])
        out["paired"][name] = paired(times[name], plain_times[name], lambda a, b: a / b)
        out.setdefault("fallback", {})[name] = ev.fallback
    loop, vm = (next(k for k in evaluators if k.startswith(f"surface, {w}"))
                for w in ("loop", "vmap"))
    # Segment by segment (the same slice of the grid), from the two pairings' own ratios.
    out["vmap_over_loop"] = paired(
        [a / b for a, b in zip(times[vm], plain_times[vm], strict=True)],
        [a / b for a, b in zip(times[loop], plain_times[loop], strict=True)], lambda a, b: a / b)
    return out


def run_child(spec: str, args: argparse.Namespace, dev: torch.device) -> int:
    """--child NORM,VARIANT: in this fresh process, time `passes` passes over the whole grid
    (after `warmup`) of one variant (plain forwards, or the surface on the evaluator's default
    path, as a worker's chunk task runs it) and print the seconds per pass as JSON."""
    norm, variant = spec.split(",")
    net, x, y, theta, dirs, grid = _setup(norm, args, dev)
    if variant == "plain":
        plain_net, batches = copy.deepcopy(net).train(), x.split(args.batch_size)

        def run() -> None:
            with torch.no_grad():
                for _ in grid:
                    for xb in batches:
                        plain_net(xb)
    else:
        ev = GridEvaluator(net, "cross_entropy", x, y, bn_mode="batch", classify=True,
                           batch_size=args.batch_size, max_batched_points=8)

        def run() -> None:
            ev.evaluate(theta, dirs, grid)
    times = []
    for _ in range(args.warmup + args.passes):
        _sync(dev)
        t0 = time.perf_counter()
        run()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"times": times[args.warmup:]}), flush=True)
    return 0


def _child_median(norm: str, variant: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--child", f"{norm},{variant}", "--device", args.device,
           "--threads", str(args.threads), "--samples", str(args.samples),
           "--batch-size", str(args.batch_size), *(["--quick"] if args.quick else [])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:  # say why, not just that a subprocess failed
        raise RuntimeError(f"the {variant} process ({norm}) exited with {done.returncode}:\n"
                           f"{done.stderr[-2000:]}")
    return med(json.loads(done.stdout.strip().splitlines()[-1])["times"])


def fresh_processes(args: argparse.Namespace) -> dict[str, Any]:
    """Plain forwards and the surface, each in fresh processes, alternating (the order swapped
    every round, the norms taken in turn): no variant runs on a heap that another one shaped.
    In one process, what ran before moves a variant's time (presumably through where the
    allocator places a forward's large intermediates): the same code read 1.24 x there and
    1.09 x here with BN (bench/RESULTS.md, 2026-12-03). A worker runs chunk tasks alone, as
    these children do."""
    t: dict[str, dict[str, list[float]]] = {n: {"plain": [], "surface": []} for n in NORMS}
    for i in range(args.processes):
        for norm in NORMS:
            for variant in (("plain", "surface") if i % 2 == 0 else ("surface", "plain")):
                t[norm][variant].append(_child_median(norm, variant, args))
        print(f"[surface] fresh processes: round {i + 1}/{args.processes} done", flush=True)
    out = {}
    for norm, tt in t.items():
        ratios = [a / b for a, b in zip(tt["surface"], tt["plain"], strict=True)]
        out[norm] = {"plain_s": tt["plain"], "surface_s": tt["surface"],
                     "paired": paired(tt["surface"], tt["plain"], lambda a, b: a / b),
                     "of_medians": med(tt["surface"]) / med(tt["plain"]),
                     "within_goal": sum(r <= GOAL for r in ratios), "rounds": len(ratios)}
    return out


def markdown(res: dict, fresh: dict, machine: dict, command: str,
             args: argparse.Namespace) -> str:
    m = machine
    lines = [
        f"## {m['date']} - surface: {args.points} x {args.points} MLP 6x128 surface vs "
        f"{args.points ** 2} forward passes ({'quick' if args.quick else 'full'})",
        "",
        f"- machine: {m['cpu']}, {m['cpu_count']} cores ({m['cpus_usable']} usable), "
        f"{m['ram_gib']} GiB RAM" + (f"; GPU {m['gpu']}, CUDA {m['cuda']}" if "gpu" in m else ""),
        f"- device {m['device']}; python {m['python']}, torch {m['torch']}, "
        f"torch.set_num_threads({m['torch_threads']}), interop threads "
        f"{m['torch_interop_threads']}",
        f"- code: git {m['git_head']}, engine sources sha256 {m['engine_code_sha256']}",
        f"- command: `{command}`; load average at start {m['loadavg_at_start']}",
        f"- data: mnist1d, eval_subset of {args.samples} training samples (seed 0), evaluation "
        f"batch {args.batch_size}; BatchNorm mode `batch`; random filter-normalised directions "
        f"(the second orthogonalised); grid [-1, 1]^2",
        f"- timing: the flat grid cut into slices of {SLICE} points, each timed "
        f"{args.passes} times per variant; each surface path interleaved with plain forwards "
        f"in a pairing of its own (after {args.warmup} warm-up pass); a "
        f"plain segment = as many forwards (no_grad, train mode, same batches) as its slice "
        "has points; s per surface = total / passes (plain: its pairing with the default "
        "path); ratio = surface / plain of its pairing: paired median [min, max] of "
        "per-segment ratios, and of the totals",
        "",
        f"| norm | variant | s per surface | plain s | paired ratio | of totals | goal <= {GOAL} "
        "| pressure |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for norm, r in res.items():
        for name in r["ratio"]:
            p = r["paired"][name]
            goal = ("met" if p["median"] <= GOAL else "**MISSED**") if "default" in name else "-"
            fb = f" (fell back to the loop: {r['fallback'][name]})" if r["fallback"][name] else ""
            lines.append(
                f"| {norm} | {name}{fb} | {r['surface_s'][name]:.3f} "
                f"| {sum(r['plain_times'][name]) / args.passes:.3f} "
                f"| {p['median']:.3f} [{p['min']:.3f}, {p['max']:.3f}] | {r['ratio'][name]:.3f} "
                f"| {goal} | {pressure(r)} |")
    lines += ["", "vmap 8 / loop, paired per segment (on a GPU, the issue asks >= 5x faster, i.e. "
              "<= 0.2): " + ", ".join(
                  f"{norm} {r['vmap_over_loop']['median']:.3f} [{r['vmap_over_loop']['min']:.3f},"
                  f" {r['vmap_over_loop']['max']:.3f}]" for norm, r in res.items())]
    if fresh:
        lines += ["", f"Fresh processes (`fresh_processes`): {args.processes} rounds; in each, "
                  "per norm, one process times plain forwards and one the surface on the "
                  f"default path, {args.passes} passes over the grid after {args.warmup} "
                  "warm-up (median pass), the order swapped every round; ratio = surface / "
                  "plain of a round: paired median [min, max], the rounds within the goal, "
                  "and the ratio of the medians", "",
                  f"| norm | plain s per surface | surface s | paired ratio | rounds <= {GOAL} "
                  f"| of medians | goal <= {GOAL} |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for norm, f in fresh.items():
            p = f["paired"]
            lines.append(
                f"| {norm} | {med(f['plain_s']):.3f} | {med(f['surface_s']):.3f} "
                f"| {p['median']:.3f} [{p['min']:.3f}, {p['max']:.3f}] "
                f"| {f['within_goal']} of {f['rounds']} | {f['of_medians']:.3f} "
                f"| {'met' if p['median'] <= GOAL else '**MISSED**'} |")
    raw = {k: {kk: vv for kk, vv in v.items() if kk not in ("times", "plain_times")}
           for k, v in res.items()}
    lines += ["", "<details><summary>raw results (JSON, seconds)</summary>", "", "```json",
              json.dumps({"machine": machine, "results": raw, "fresh_processes": fresh},
                         default=str), "```", "",
              "</details>", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: 5 x 5 grid, prints only")
    p.add_argument("--device", default="cpu", help="cpu (the goal's device), cuda, cuda:N")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--samples", type=int, default=2048, help="evaluation samples (default 2048)")
    p.add_argument("--batch-size", type=int, default=2048,
                   help="evaluation batch, both sides (default 2048: one batch per point)")
    p.add_argument("--data-dir", type=Path, default=Path("/tmp"), help="unused by mnist1d")
    p.add_argument("--results", type=Path, default=None,
                   help=f"append the report here (default {RESULTS.relative_to(ROOT)} for full "
                   "runs; --quick writes only when given)")
    p.add_argument("--processes", type=int, default=None,
                   help="rounds of fresh processes per norm (default 5; --quick 1; 0: none)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # NORM,VARIANT: one child
    args = p.parse_args(argv)
    args.points, args.passes, args.warmup = (5, 2, 1) if args.quick else (21, 5, 1)
    if args.processes is None:
        args.processes = 1 if args.quick else 5

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # only settable before any parallel work
        torch.set_num_interop_threads(1)
    dev = torch.device(args.device)
    if args.child:
        return run_child(args.child, args, dev)
    machine = describe(dev)
    machine["loadavg_at_start"] = loadavg()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(json.dumps(machine), flush=True)
    res = {}
    for norm in NORMS:
        r = res[norm] = gauged(bench_norm, norm, args, dev)
        for name in r["ratio"]:
            pr = r["paired"][name]
            print(f"[surface] norm {norm}: {name}/plain paired {pr['median']:.3f} "
                  f"[{pr['min']:.3f}, {pr['max']:.3f}], of totals {r['ratio'][name]:.3f}; "
                  f"fallback {r['fallback'][name]}", flush=True)
    fresh = fresh_processes(args) if args.processes > 0 else {}
    for norm, f in fresh.items():
        pr = f["paired"]
        print(f"[surface] norm {norm}: fresh processes, surface/plain paired {pr['median']:.3f} "
              f"[{pr['min']:.3f}, {pr['max']:.3f}], {f['within_goal']} of {f['rounds']} rounds "
              f"<= {GOAL}", flush=True)
    report = markdown(res, fresh, machine, command, args)
    out = args.results or (None if args.quick else RESULTS)
    return publish(report, out)


if __name__ == "__main__":
    sys.exit(main())
