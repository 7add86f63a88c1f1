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
import copy
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench._machine import ROOT, cpu_pressure_us, describe, loadavg  # noqa: E402
from server.presets import get_preset  # noqa: E402
from server.spec import RunSpec, build_spec  # noqa: E402
from worker.engine.data import BatchOrder, DataError, Dataset  # noqa: E402
from worker.engine.models import build_model  # noqa: E402
from worker.engine.probes import ProbeContext  # noqa: E402
from worker.engine.probes.landscape import PATH_KEY, LandscapeProbe  # noqa: E402
from worker.engine.sink import MemorySink  # noqa: E402
from worker.engine.trainer import Trainer  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"

# The two models: a conv net where a step costs ~20 ms on 2 CPU cores and an MLP where it costs
# ~1 ms, so that per-step Python overhead shows. Both with BatchNorm, the paper's subject.
MODELS: dict[str, dict[str, Any]] = {
    "vgg11x0.5-digits": {
        "model": "vgg", "vgg_config": 11, "width": 0.5, "dataset": "digits", "norm": "batch",
    },
    "mlp6x128-mnist1d": {
        "model": "mlp", "depth": 6, "width": 128, "dataset": "mnist1d", "norm": "batch",
    },
}
ICS_LAYERS = {"vgg11x0.5-digits": [3, 6], "mlp6x128-mnist1d": [3, 5]}
MULTIPLIERS = [0.5, 1.0, 2.0, 4.0]  # K = 4, the paper's VGG set
SUITE_EVERY = 16

OFF = {name: {"every": 0} for name in
       ("landscape", "ics", "activations", "sharpness", "grad_norm", "distance")}


@dataclass(frozen=True)
class Plan:
    """Repetitions and steps per timed segment, per model (segments of ~0.1-0.5 s in full)."""

    reps: int
    warmup: int
    train_steps: dict[str, int]  # benchmark 1
    landscape_steps: dict[str, int]  # benchmark 2 (a multiple of K for the direct timing)
    suite_steps: dict[str, int]  # benchmark 3 (a multiple of SUITE_EVERY)
    gpu_steps: int  # benchmark 4
    vmap_calls: dict[str, int]  # benchmark 5: measure() calls per timed segment


# Short segments, many repetitions: this kind of shared machine slows down in bursts of a few
# seconds, and short interleaved segments let both sides of a ratio see the same bursts.
FULL = Plan(
    reps=51, warmup=3,
    train_steps={"vgg11x0.5-digits": 8, "mlp6x128-mnist1d": 64},
    landscape_steps={"vgg11x0.5-digits": 4, "mlp6x128-mnist1d": 16},
    suite_steps={"vgg11x0.5-digits": 16, "mlp6x128-mnist1d": 64},
    gpu_steps=20,
    vmap_calls={"vgg11x0.5-digits": 1, "mlp6x128-mnist1d": 4, "paper-vgg16": 2},
)
QUICK = Plan(
    reps=3, warmup=1,
    train_steps={"vgg11x0.5-digits": 4, "mlp6x128-mnist1d": 32},
    landscape_steps={"vgg11x0.5-digits": 4, "mlp6x128-mnist1d": 16},
    suite_steps={"vgg11x0.5-digits": 16, "mlp6x128-mnist1d": 32},
    gpu_steps=10,
    vmap_calls={"vgg11x0.5-digits": 1, "mlp6x128-mnist1d": 4, "paper-vgg16": 1},
)


# -- variants ----------------------------------------------------------------------------------


def make_spec(base: dict[str, Any], probes: dict[str, Any], device: str, **extra: Any) -> RunSpec:
    """Training setup shared by every variant: SGD LR 0.1, batch 128, no eval, no checkpoints.

    `steps` is huge so that no timed segment reaches the end of the run (which would evaluate).
    """
    return build_spec({
        **base, "optimizer": "sgd", "lr": 0.1, "batch_size": 128, "steps": 10**9,
        "eval_every": 0, "checkpoint_every": 0, "device": device, "probes": probes, **extra,
    })


class EngineRun:
    """Trainer.run for n steps. Each call starts at step 0 (no checkpoint store) from the
    current weights: the same data order every segment, like the plain loop."""

    def __init__(self, spec: RunSpec, data_dir: Path, device: torch.device) -> None:
        self.trainer = Trainer(spec, data_dir, device)
        self.probe_times: dict[str, list[float]] = {}  # the engine's probe_time/* over all calls

    def __call__(self, n: int) -> None:
        sink = MemorySink()
        result = self.trainer.run(sink, max_steps=n)
        if result.status != "paused" or result.next_step != n:
            raise RuntimeError(f"engine segment ended {result.status} at {result.next_step}")
        for key in sink.series:
            if key.startswith("probe_time/"):
                name = key.removeprefix("probe_time/")
                self.probe_times.setdefault(name, []).extend(sink.values(key))


class PlainLoop:
    """What a researcher writes by hand: same model, data tensors, batch order and optimiser.

    `with_acc` adds the training accuracy computed the naive way, every step (argmax, ==, sum,
    int): a diagnostic variant. The engine records the same per-step values but computes them
    for a window of steps at once (worker/engine/trainer.py, ACC_WINDOW).
    """

    def __init__(
        self, spec: RunSpec, data: Dataset, device: torch.device, with_acc: bool = False
    ) -> None:
        self.device = device
        self.with_acc = with_acc
        self.x, self.y = data.x_train, data.y_train  # already on the device (the Trainer's copy)
        self.order = BatchOrder(data.n_train, spec.batch_size, spec.seed)
        gen = torch.Generator(device=device)
        gen.manual_seed(spec.seed)
        self.net = build_model(spec, data.in_shape, data.n_outputs, gen).to(device).train()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=spec.lr)
        self.losses: list[float] = []
        self.accs: list[float] = []

    def __call__(self, n: int) -> None:
        for step in range(n):
            idx = self.order.indices(step).to(self.device, non_blocking=True)
            x, y = self.x[idx], self.y[idx]
            out = self.net(x)
            loss = F.cross_entropy(out, y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.losses.append(loss.item())
            if self.with_acc:
                self.accs.append(int((out.detach().argmax(1) == y).sum()) / len(y))
        if not all(map(_finite, self.losses[-n:])):
            raise RuntimeError("plain loop diverged")


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


class DirectLandscape:
    """LandscapeProbe.measure alone, on a ProbeContext built as Trainer._measure builds it."""

    def __init__(self, engine: EngineRun) -> None:
        t = engine.trainer
        (self.probe,) = [p for p in t.probes if p.name == "landscape"]
        self.last = None  # the last measure()'s ProbeOutput
        x, y = t.batch(0)
        t.noise.mark_step_start()
        out = t.net(x)
        loss = t.loss_fn(out, y)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.trainer = t
        self.ctx = ProbeContext(
            step=0, net=t.net,
            params={n: p.detach() for n, p in t.params.items()},
            grads={n: p.grad.detach().clone() for n, p in t.params.items()},
            x=x, y=y, loss_fn=t.loss_fn, lr=t.spec.lr, optimizer=t.optimizer, noise=t.noise,
            mode=t.spec.probes.mode, autocast=t.autocast,
        )

    def __call__(self, n: int) -> None:
        state = self.trainer.noise.get_state()
        for _ in range(n):
            self.last = self.probe.measure(self.ctx)
        self.trainer.noise.set_state(state)

    def with_probe(self, probe: LandscapeProbe) -> DirectLandscape:
        """The same step, context and shadow, measured by another probe."""
        other = copy.copy(self)
        other.probe, other.last = probe, None
        return other


# -- timing ------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(
    variants: dict[str, tuple[Callable[[int], None], int]], plan: Plan, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per segment of each variant (fn, n): warm-up, then reps in alternating order."""
    names = list(variants)
    for _ in range(plan.warmup):
        for k in names:
            fn, n = variants[k]
            fn(n)
    # The objects alive now (models, data, torch's own) move to gc's permanent generation, so
    # a full collection inside a timed segment costs what that segment allocated, not ~80 ms.
    gc.collect()
    gc.freeze()
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(plan.reps):
        for k in names if r % 2 == 0 else names[::-1]:
            fn, n = variants[k]
            _sync(device)
            t0 = time.perf_counter()
            fn(n)
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    gc.unfreeze()
    return times


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def paired(num: list[float], den: list[float], f: Callable[[float, float], float]) -> dict:
    """f(num_r, den_r) per repetition: median and range (the spread of the ratio itself)."""
    rs = [f(a, b) for a, b in zip(num, den, strict=True)]
    return {"median": med(rs), "min": min(rs), "max": max(rs)}


# -- the benchmarks ----------------------------------------------------------------------------


def gauged(fn: Callable[..., dict], *args: Any) -> dict:
    """fn(*args) plus its wall time and the share of it spent waiting for a CPU (Linux PSI)."""
    p0, t0 = cpu_pressure_us(), time.perf_counter()
    out = fn(*args)
    wall = time.perf_counter() - t0
    p1 = cpu_pressure_us()
    out["wall_s"] = wall
    out["cpu_pressure"] = None if p0 is None or p1 is None else (p1 - p0) / 1e6 / wall
    note = "" if (out["cpu_pressure"] or 0) < 0.1 else "  <- other load competed: noisier"
    print(f"    {fn.__name__}: {wall:.0f} s, cpu pressure {_p(out)}{note}", flush=True)
    return out


def bench_plain(name: str, plan: Plan, args: argparse.Namespace, dev: torch.device) -> dict:
    spec = make_spec(MODELS[name], OFF, args.device)
    engine = EngineRun(spec, args.data_dir, dev)
    plain = PlainLoop(spec, engine.trainer.data, dev)
    plain_acc = PlainLoop(spec, engine.trainer.data, dev, with_acc=True)
    n = plan.train_steps[name]
    t = interleave({"plain": (plain, n), "plain+acc": (plain_acc, n), "engine": (engine, n)},
                   plan, dev)
    return {
        "steps_per_segment": n,
        "median_s": {k: med(v) for k, v in t.items()},
        "steps_per_s": {k: n / med(v) for k, v in t.items()},
        "ratio": med(t["plain"]) / med(t["engine"]),  # engine throughput / plain throughput
        "paired": paired(t["plain"], t["engine"], lambda p, e: p / e),
        "ratio_vs_plain_acc": med(t["plain+acc"]) / med(t["engine"]),
        "paired_vs_plain_acc": paired(t["plain+acc"], t["engine"], lambda p, e: p / e),
        "target": ">= 0.97",
        "samples_s": t,
    }


def bench_landscape(name: str, plan: Plan, args: argparse.Namespace, dev: torch.device) -> dict:
    k = len(MULTIPLIERS)
    base = MODELS[name]
    off = EngineRun(make_spec(base, OFF, args.device), args.data_dir, dev)
    probes = {**OFF, "landscape": {"every": 1, "multipliers": MULTIPLIERS}}
    on = EngineRun(make_spec(base, probes, args.device), args.data_dir, dev)
    direct = DirectLandscape(on)
    n = plan.landscape_steps[name]
    t = interleave(
        {"off": (off, n), "landscape_every_1": (on, n), "measure_only": (direct, n // k)},
        plan, dev,
    )
    t_step = med(t["off"]) / n
    in_loop = (med(t["landscape_every_1"]) - med(t["off"])) / n  # extra seconds per probed step
    measure = med(t["measure_only"]) / (n // k)
    return {
        "K": k,
        "steps_per_segment": n,
        "median_s": {kk: med(v) for kk, v in t.items()},
        "t_step_ms": 1e3 * t_step,
        "probe_in_loop_ms": 1e3 * in_loop,
        "probe_measure_ms": 1e3 * measure,
        "ratio_in_loop": in_loop / (k * t_step),
        "ratio_measure": measure / (k * t_step),
        "paired_in_loop": paired(t["landscape_every_1"], t["off"], lambda a, b: (a / b - 1) / k),
        # measure_only times n/K calls, off times n steps: both segments are "K steps" long
        "paired_measure": paired(t["measure_only"], t["off"], lambda a, b: a / b),
        "target": "<= 1.1",
        "samples_s": t,
    }


def suite_probes(name: str) -> dict[str, Any]:
    every = {"every": SUITE_EVERY}
    return {
        "landscape": {**every, "multipliers": MULTIPLIERS},
        "ics": {**every, "layers": ICS_LAYERS[name]},
        "activations": every,
        "grad_norm": every,
        "distance": every,
        "sharpness": {"every": 0},
    }


def bench_suite(name: str, plan: Plan, args: argparse.Namespace, dev: torch.device) -> dict:
    base = MODELS[name]
    off = EngineRun(make_spec(base, OFF, args.device), args.data_dir, dev)
    on = EngineRun(make_spec(base, suite_probes(name), args.device), args.data_dir, dev)
    n = plan.suite_steps[name]
    t = interleave({"off": (off, n), "suite": (on, n)}, plan, dev)
    n_ics = len(ICS_LAYERS[name])
    floor = on.trainer.spec.probe_cost()["floor"]  # 1 + (K + n_ics)/16, from the spec
    slowdown = med(t["suite"]) / med(t["off"])
    t_step = med(t["off"]) / n
    # Where the time goes: the engine's own per-probe timers (probe_time/<name>), every point.
    per_probe = {k: 1e3 * med(v) for k, v in on.probe_times.items()}
    return {
        "steps_per_segment": n,
        "probe_points_per_segment": n // SUITE_EVERY,
        "n_ics": n_ics,
        "K": len(MULTIPLIERS),
        "median_s": {k: med(v) for k, v in t.items()},
        "t_step_ms": 1e3 * t_step,
        "slowdown": slowdown,
        "floor": floor,
        "measured_over_floor": slowdown / floor,
        "paired_over_floor": paired(t["suite"], t["off"], lambda a, b: a / b / floor),
        "probe_ms_per_point": per_probe,
        "probe_steps_per_point": {k: v / (1e3 * t_step) for k, v in per_probe.items()},
        "target": "<= 1.1",
        "samples_s": t,
    }


def _synthetic_cifar(n: int = 50_000) -> Dataset:
    """CIFAR-10-shaped random data: throughput does not depend on pixel values."""
    g = torch.Generator().manual_seed(0)
    return Dataset(
        name="cifar10-synthetic", x_train=torch.randn(n, 3, 32, 32, generator=g),
        y_train=torch.randint(10, (n,), generator=g), x_test=None, y_test=None,
        task="classification", n_outputs=10, in_shape=(3, 32, 32),
        info={"synthetic": True, "why": "CIFAR-10 archive not found"},
    )


@contextlib.contextmanager
def _cifar_or_synthetic(data_dir: Path) -> Iterator[str]:
    from worker.engine.data.cifar10 import load_cifar10

    try:
        load_cifar10(data_dir)
        yield "cifar10"
    except DataError:
        with mock.patch("worker.engine.trainer.load_dataset", lambda *_: _synthetic_cifar()):
            yield "synthetic CIFAR-shaped tensors (archive not found)"


def bench_bf16(plan: Plan, args: argparse.Namespace, dev: torch.device) -> dict:
    (paper,) = [s for s in get_preset("paper-vgg16").specs() if s.norm == "batch"]
    base = paper.model_dump(exclude={"probes", "steps", "eval_every", "device", "bf16"})
    with _cifar_or_synthetic(args.data_dir) as data:
        fp32 = EngineRun(make_spec(base, OFF, args.device, bf16=False), args.data_dir, dev)
        bf16 = EngineRun(make_spec(base, OFF, args.device, bf16=True), args.data_dir, dev)
    n = plan.gpu_steps
    t = interleave({"fp32": (fp32, n), "bf16": (bf16, n)}, plan, dev)
    bs = paper.batch_size or 1
    return {
        "data": data,
        "steps_per_segment": n,
        "median_s": {k: med(v) for k, v in t.items()},
        "images_per_s": {k: n * bs / med(v) for k, v in t.items()},
        "speedup": med(t["fp32"]) / med(t["bf16"]),
        "paired": paired(t["fp32"], t["bf16"], lambda a, b: a / b),
        "samples_s": t,
    }


def bench_vmap(name: str, plan: Plan, args: argparse.Namespace, dev: torch.device) -> dict:
    """The vmap-batched landscape probe vs the loop: one measure() each on the same step,
    context and shadow, interleaved; plus how far apart their values are."""
    probes = {**OFF, "landscape": {"every": 1, "multipliers": MULTIPLIERS}}
    data = "as in sections 1-3"
    if name == "paper-vgg16":
        (paper,) = [s for s in get_preset("paper-vgg16").specs() if s.norm == "batch"]
        base = paper.model_dump(exclude={"probes", "steps", "eval_every", "device", "bf16"})
        with _cifar_or_synthetic(args.data_dir) as data:
            engine = EngineRun(make_spec(base, probes, args.device), args.data_dir, dev)
    else:
        engine = EngineRun(make_spec(MODELS[name], probes, args.device), args.data_dir, dev)
    loop = DirectLandscape(engine)
    batched = loop.with_probe(LandscapeProbe(1, MULTIPLIERS, batched=True))
    n = plan.vmap_calls[name]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = interleave({"loop": (loop, n), "vmap": (batched, n)}, plan, dev)
    a, b = loop.last, batched.last
    if b.scalars[PATH_KEY] != 1.0:
        raise RuntimeError(f"the batched probe fell back to the loop: {batched.probe.fallback}")
    rel = {
        key: max(abs(getattr(rb, key) - getattr(ra, key)) / abs(getattr(ra, key))
                 for ra, rb in zip(a.eta_records, b.eta_records, strict=True))
        for key in ("loss", "grad_dist")
    }
    out = {
        "K": len(MULTIPLIERS),
        "calls_per_segment": n,
        "data": data,
        "median_s": {k: med(v) for k, v in t.items()},
        "ms_per_measure": {k: 1e3 * med(v) / n for k, v in t.items()},
        "ratio": med(t["vmap"]) / med(t["loop"]),  # < 1: batched is faster
        "paired": paired(t["vmap"], t["loop"], lambda v, lo: v / lo),
        "max_rel_diff": rel,
        "samples_s": t,
    }
    if dev.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return out


# -- report ------------------------------------------------------------------------------------


def verdict(value: float, target: str) -> str:
    op, bound = target.split()
    ok = value >= float(bound) if op == ">=" else value <= float(bound)
    return "met" if ok else "**MISSED**"


def _r(p: dict) -> str:
    return f"{p['median']:.3f} [{p['min']:.3f}, {p['max']:.3f}]"


def _p(r: dict) -> str:
    return "n/a" if r.get("cpu_pressure") is None else f"{r['cpu_pressure']:.2f}"


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
            f"| **{_r(r['paired'])}** | {r['ratio']:.3f} | {_r(r['paired_vs_plain_acc'])} "
            f"| {_p(r)} | {verdict(r['paired']['median'], r['target'])} |"
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
            f"| {r['probe_in_loop_ms']:.2f} | **{_r(r['paired_in_loop'])}** "
            f"| {r['ratio_in_loop']:.3f} | {r['probe_measure_ms']:.2f} "
            f"| {_r(r['paired_measure'])} | {r['ratio_measure']:.3f} | {_p(r)} "
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
        f"distance, all every {SUITE_EVERY}; sharpness off (its power iteration is beyond the "
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
            f"| **{_r(r['paired_over_floor'])}** | {r['measured_over_floor']:.3f} | {_p(r)} "
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
            f"{g['images_per_s']['bf16']:.0f} images/s; bf16 speedup, paired {_r(g['paired'])} "
            f"(of medians {g['speedup']:.2f}); median s per {g['steps_per_segment']} steps: "
            f"fp32 {g['median_s']['fp32']:.4f}, bf16 {g['median_s']['bf16']:.4f}; "
            f"pressure {_p(g)}"
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
            f"| {per['loop']:.2f} / {per['vmap']:.2f} | **{_r(r['paired'])}** "
            f"| {r['ratio']:.3f} | {d['loss']:.1e} / {d['grad_dist']:.1e} | {_p(r)} |"
        )
    return lines


def _run_vmap(res: dict, name: str, plan: Plan, args: argparse.Namespace,
              dev: torch.device) -> None:
    r = res["vmap"][name] = gauged(bench_vmap, name, plan, args, dev)
    print(f"[5 vmap] {name}: vmap/loop paired {_r(r['paired'])}, of medians {r['ratio']:.3f}; "
          f"ms per measure {r['ms_per_measure']}; max rel diff {r['max_rel_diff']}", flush=True)


HEADER = """# Engine benchmarks

Produced by `bench/bench_engine.py` (see its docstring and bench/README.md). Every number is a
ratio of two variants timed side by side, interleaved, in one process, with the machine and
versions stated. Newest run last.

"""


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
            print(f"[1 plain] {name}: engine/plain paired {_r(r['paired'])}, of medians "
                  f"{r['ratio']:.3f}; steps/s {r['steps_per_s']}", flush=True)
        if "landscape" in only:
            r = res["landscape"][name] = gauged(bench_landscape, name, plan, args, dev)
            print(f"[2 landscape] {name}: in loop {_r(r['paired_in_loop'])}, measure() "
                  f"{_r(r['paired_measure'])} x K steps (step {r['t_step_ms']:.2f} ms)", flush=True)
        if "suite" in only:
            r = res["suite"][name] = gauged(bench_suite, name, plan, args, dev)
            print(f"[3 suite] {name}: slowdown/floor paired {_r(r['paired_over_floor'])}, of "
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
    if out is None:
        print("\n" + report)
        return 0
    if not out.exists():
        out.write_text(HEADER)
    with out.open("a") as f:
        f.write("\n" + report)
    print(f"appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
