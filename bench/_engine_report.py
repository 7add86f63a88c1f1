"""The engine benchmarks' report: a markdown section per benchmark with its verdict against
the target, and the raw results as JSON, appended to bench/RESULTS.md."""

from __future__ import annotations

import json
from typing import Any

from bench._engine_cases import MULTIPLIERS, SUITE_EVERY
from bench._timing import pressure

HEADER = """# Engine benchmarks

Produced by `bench/bench_engine.py` (see its docstring and bench/README.md). Every number is a
ratio of two variants timed side by side, interleaved, in one process, with the machine and
versions stated. Newest run last.

"""


def verdict(value: float, target: str) -> str:
    op, bound = target.split()
    ok = value >= float(bound) if op == ">=" else value <= float(bound)
    return "met" if ok else "**MISSED**"


def spread(p: dict) -> str:
    return f"{p['median']:.3f} [{p['min']:.3f}, {p['max']:.3f}]"


def markdown(res: dict, machine: dict, command: str, plan_name: str) -> str:
    m = machine
    lines = [
        f"## {m['date']} - {m['device']}, {m['torch_threads']} threads ({plan_name})",
        "",
        f"- machine: {m['cpu']}, {m['cpu_count']} cores ({m['cpus_usable']} usable), "
        f"{m['ram_gib']} GiB RAM" + (f"; GPU {m['gpu']}, CUDA {m['cuda']}" if "gpu" in m else ""),
        f"- python {m['python']}, torch {m['torch']}, torch.set_num_threads({m['torch_threads']}), "
        f"interop threads {m['torch_interop_threads']}",
        f"- code: git {m['git_head']}, engine sources sha256 {m['engine_code_sha256']}",
        f"- command: `{command}`",
        f"- load average at start {m['loadavg_at_start']}; pressure column: share of the "
        "benchmark's wall time some task waited for a CPU (/proc/pressure/cpu); above ~0.1 "
        "other work competed with the run and its numbers are noisier",
        f"- timing: {res['plan']['reps']} interleaved repetitions (A B, B A, ...) after "
        f"{res['plan']['warmup']} warm-up segments; medians of seconds per segment; "
        "paired = median [min, max] of the per-repetition ratios of adjacent segments (the "
        "headline and the verdict: robust to the machine's speed drifting during the run); "
        "of medians = the same ratio from the medians of each side",
    ]
    lines += _section_plain(res["plain"])
    lines += _section_landscape(res["landscape"])
    lines += _section_suite(res["suite"])
    lines += _section_gpu(res["gpu"])
    lines += _section_vmap(res["vmap"], machine)
    raw = {"machine": machine,
           **{k: _round(res[k]) for k in ("plan", "plain", "landscape", "suite", "gpu", "vmap")}}
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, separators=(',', ':'), default=str)}"
                      for k, v in raw.items())
    lines += ["", "<details><summary>raw results (JSON, seconds per segment)</summary>", "",
              "```json", "{", body, "}", "```", "", "</details>", ""]
    return "\n".join(lines)


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.5g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def _section_plain(rows: dict) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "### 1. Probes off vs a plain PyTorch loop (target: engine/plain throughput >= 0.97)",
        "",
        "plain+acc: the plain loop plus a training accuracy computed every step (argmax, ==, "
        "sum, int), as a naive loop does; the engine records the same per-step values, "
        "computed per window of steps (diagnostic, not the target).",
        "",
        "| model | steps/segment | plain median s | plain+acc median s | engine median s "
        "| plain steps/s | engine steps/s | **engine/plain, paired** | engine/plain, of medians "
        "| engine/(plain+acc), paired | pressure | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['steps_per_segment']} | {r['median_s']['plain']:.4f} "
            f"| {r['median_s']['plain+acc']:.4f} | {r['median_s']['engine']:.4f} "
            f"| {r['steps_per_s']['plain']:.1f} | {r['steps_per_s']['engine']:.1f} "
            f"| **{spread(r['paired'])}** | {r['ratio']:.3f} | {spread(r['paired_vs_plain_acc'])} "
            f"| {pressure(r)} | {verdict(r['paired']['median'], r['target'])} |"
        )
    return lines


def _section_landscape(rows: dict) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        f"### 2. One landscape probe, K = {len(MULTIPLIERS)} step sizes, vs K training steps "
        "(target <= 1.1)",
        "",
        "In the loop: (T(landscape every step) - T(probes off)) / steps, over K x the probes-off "
        "step. measure() alone: LandscapeProbe.measure on a ProbeContext built as "
        "Trainer._measure builds it, over K probes-off steps.",
        "",
        "| model | steps/segment | median s: off / every-1 / measure-only | step ms "
        "| probe ms in loop | **ratio in loop, paired** | of medians | probe ms measure() "
        "| ratio measure(), paired | of medians | pressure | verdict (in loop) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        ms = r["median_s"]
        lines.append(
            f"| {name} | {r['steps_per_segment']} | {ms['off']:.4f} / "
            f"{ms['landscape_every_1']:.4f} / {ms['measure_only']:.4f} | {r['t_step_ms']:.2f} "
            f"| {r['probe_in_loop_ms']:.2f} | **{spread(r['paired_in_loop'])}** "
            f"| {r['ratio_in_loop']:.3f} | {r['probe_measure_ms']:.2f} "
            f"| {spread(r['paired_measure'])} | {r['ratio_measure']:.3f} | {pressure(r)} "
            f"| {verdict(r['paired_in_loop']['median'], r['target'])} |"
        )
    return lines


def _section_suite(rows: dict) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        f"### 3. Probe suite every {SUITE_EVERY} steps vs probes off "
        "(target: slowdown <= 1.1 x floor)",
        "",
        f"Suite: landscape (K = {len(MULTIPLIERS)}), ICS (2 layers), activations, grad_norm, "
        f"distance, all every {SUITE_EVERY}; sharpness off (its Lanczos iterations are beyond the "
        f"floor). Floor = 1 + (K + n_ics)/{SUITE_EVERY}.",
        "",
        "| model | steps/segment | off median s | suite median s | slowdown, of medians "
        "| floor | **slowdown/floor, paired** | of medians | pressure | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['steps_per_segment']} | {r['median_s']['off']:.4f} "
            f"| {r['median_s']['suite']:.4f} | {r['slowdown']:.3f} | {r['floor']:.3f} "
            f"| **{spread(r['paired_over_floor'])}** | {r['measured_over_floor']:.3f} "
            f"| {pressure(r)} "
            f"| {verdict(r['paired_over_floor']['median'], r['target'])} |"
        )
    lines += ["", "Per probe point (the engine's own probe_time/* timers, median over every "
              "probe point of the benchmark), in ms and in probes-off training steps (the floor "
              "allows K for landscape, 1 per ICS layer, 0 for the rest):", ""]
    for name, r in rows.items():
        parts = ", ".join(
            f"{k} {v:.2f} ms = {r['probe_steps_per_point'][k]:.2f} steps"
            for k, v in r["probe_ms_per_point"].items()
        )
        lines.append(f"- {name} (step {r['t_step_ms']:.2f} ms): {parts}")
    return lines


def _section_gpu(g: dict) -> list[str]:
    lines = ["", "### 4. GPU", ""]
    if "skipped" in g:
        lines.append(f"- bf16 vs fp32 images/s on paper-vgg16: skipped: {g['skipped']}")
    else:
        lines.append(
            f"- bf16 vs fp32 images/s on paper-vgg16 (norm batch, batch 128, probes off, data: "
            f"{g['data']}): fp32 {g['images_per_s']['fp32']:.0f}, bf16 "
            f"{g['images_per_s']['bf16']:.0f} images/s; bf16 speedup, paired {spread(g['paired'])} "
            f"(of medians {g['speedup']:.2f}); median s per {g['steps_per_segment']} steps: "
            f"fp32 {g['median_s']['fp32']:.4f}, bf16 {g['median_s']['bf16']:.4f}; "
            f"pressure {pressure(g)}"
        )
    return lines


def _section_vmap(rows: dict, machine: dict) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        f"### 5. Landscape probe, K = {len(MULTIPLIERS)}: vmap-batched vs the loop "
        f"(on {machine['device']})",
        "",
        "One LandscapeProbe.measure with probes.landscape.batched (one torch.func.vmap call "
        "over the K stacked parameter sets) vs the default loop of K forward/backward passes, "
        "on the same step, context and shadow, interleaved. vmap/loop < 1: batched is faster. "
        "No target. max rel diff: the largest relative difference between the two paths' "
        "per-eta values (fp32 reduction order only).",
        "",
        "| model | calls/segment | median s: loop / vmap | ms per measure(): loop / vmap "
        "| **vmap/loop, paired** | of medians | max rel diff: loss / grad_dist | pressure |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        ms, per, d = r["median_s"], r["ms_per_measure"], r["max_rel_diff"]
        mem = f" (peak GPU memory {r['peak_mem_gib']:.1f} GiB)" if "peak_mem_gib" in r else ""
        lines.append(
            f"| {name}{mem} | {r['calls_per_segment']} | {ms['loop']:.4f} / {ms['vmap']:.4f} "
            f"| {per['loop']:.2f} / {per['vmap']:.2f} | **{spread(r['paired'])}** "
            f"| {r['ratio']:.3f} | {d['loss']:.1e} / {d['grad_dist']:.1e} | {pressure(r)} |"
        )
    return lines

