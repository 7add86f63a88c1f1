"""The engine benchmarks' cases: the models and plans, the variants timed against each other
(the engine, a plain hand-written PyTorch loop, the landscape probe called directly) and one
function per benchmark returning its measurements (bench_engine.py runs and reports them)."""

from __future__ import annotations

import argparse
import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F

from bench._timing import interleave, med, paired
from server.presets import get_preset
from server.spec import RunSpec, build_spec
from worker.engine.data import BatchOrder, DataError, Dataset
from worker.engine.models import build_model
from worker.engine.probes import ProbeContext
from worker.engine.probes.landscape import PATH_KEY, LandscapeProbe
from worker.engine.sink import MemorySink
from worker.engine.trainer import Trainer

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
        # The bench's --threads (set on the process), not the engine's default of one.
        self.trainer = Trainer(spec, data_dir, device, torch.get_num_threads())
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
    for a window of steps at once (worker/engine/trainer.py, ACC_WINDOW). `sync=False` keeps
    each step's loss on the device and reads them once per segment (on a GPU a per-step read
    makes the CPU wait for every step before it queues the next); `bf16` runs the forward
    under bf16 autocast, as the engine's bf16 option does.
    """

    def __init__(
        self, spec: RunSpec, data: Dataset, device: torch.device, with_acc: bool = False,
        sync: bool = True, bf16: bool = False,
    ) -> None:
        self.device = device
        self.with_acc, self.sync, self.bf16 = with_acc, sync, bf16
        self.x, self.y = data.x_train, data.y_train  # already on the device (the Trainer's copy)
        self.order = BatchOrder(data.n_train, spec.batch_size, spec.seed)
        gen = torch.Generator(device=device)
        gen.manual_seed(spec.seed)
        self.net = build_model(spec, data.in_shape, data.n_outputs, gen).to(device).train()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=spec.lr)
        self.losses: list[float] = []
        self.accs: list[float] = []

    def __call__(self, n: int) -> None:
        pending: list[torch.Tensor] = []
        for step in range(n):
            idx = self.order.indices(step).to(self.device, non_blocking=True)
            x, y = self.x[idx], self.y[idx]
            with (torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16
                  else contextlib.nullcontext()):
                out = self.net(x)
            loss = F.cross_entropy(out.float(), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            if self.sync:
                self.losses.append(loss.item())
            else:
                pending.append(loss.detach())
            if self.with_acc:
                self.accs.append(int((out.detach().argmax(1) == y).sum()) / len(y))
        if pending:
            self.losses.extend(torch.stack(pending).tolist())
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


def bench_plain(name: str, plan: Plan, args: argparse.Namespace, dev: torch.device) -> dict:
    spec = make_spec(MODELS[name], OFF, args.device)
    engine = EngineRun(spec, args.data_dir, dev)
    plain = PlainLoop(spec, engine.trainer.data, dev)
    plain_acc = PlainLoop(spec, engine.trainer.data, dev, with_acc=True)
    n = plan.train_steps[name]
    t = interleave({"plain": (plain, n), "plain+acc": (plain_acc, n), "engine": (engine, n)},
                   plan.reps, plan.warmup, dev)
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
        plan.reps, plan.warmup, dev,
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
    t = interleave({"off": (off, n), "suite": (on, n)}, plan.reps, plan.warmup, dev)
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


def bf16_times(base: dict[str, Any], args: argparse.Namespace, dev: torch.device, n: int,
               reps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per segment of n training steps, probes off, fp32 and bf16 autocast,
    interleaved: the engine on `base` (its batch size kept)."""
    batch = base.get("batch_size") or 128
    runs = {k: EngineRun(make_spec(base, OFF, args.device, bf16=k == "bf16", batch_size=batch),
                         args.data_dir, dev) for k in ("fp32", "bf16")}
    return interleave({k: (r, n) for k, r in runs.items()}, reps, warmup, dev)


def bench_bf16(plan: Plan, args: argparse.Namespace, dev: torch.device) -> dict:
    (paper,) = [s for s in get_preset("paper-vgg16").specs() if s.norm == "batch"]
    base = paper.model_dump(exclude={"probes", "steps", "eval_every", "device", "bf16"})
    n = plan.gpu_steps
    with _cifar_or_synthetic(args.data_dir) as data:
        t = bf16_times({**base, "batch_size": 128}, args, dev, n, plan.reps, plan.warmup)
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


def vmap_times(engine: EngineRun, n: int, reps: int, warmup: int,
               dev: torch.device) -> dict[str, Any]:
    """The vmap-batched landscape probe vs the loop: n measure() calls each per segment on
    the same step, context and shadow, interleaved: their seconds per segment (`t`), how far
    apart their values are (`max_rel_diff`) and, on CUDA, the peak memory."""
    loop = DirectLandscape(engine)
    batched = loop.with_probe(LandscapeProbe(1, MULTIPLIERS, batched=True))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = interleave({"loop": (loop, n), "vmap": (batched, n)}, reps, warmup, dev)
    a, b = loop.last, batched.last
    if b.scalars[PATH_KEY] != 1.0:
        raise RuntimeError(f"the batched probe fell back to the loop: {batched.probe.fallback}")
    out: dict[str, Any] = {"t": t, "max_rel_diff": {
        key: max(abs(getattr(rb, key) - getattr(ra, key)) / abs(getattr(ra, key))
                 for ra, rb in zip(a.eta_records, b.eta_records, strict=True))
        for key in ("loss", "grad_dist")
    }}
    if dev.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return out


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
    n = plan.vmap_calls[name]
    v = vmap_times(engine, n, plan.reps, plan.warmup, dev)
    t = v["t"]
    out = {
        "K": len(MULTIPLIERS),
        "calls_per_segment": n,
        "data": data,
        "median_s": {k: med(v) for k, v in t.items()},
        "ms_per_measure": {k: 1e3 * med(v) / n for k, v in t.items()},
        "ratio": med(t["vmap"]) / med(t["loop"]),  # < 1: batched is faster
        "paired": paired(t["vmap"], t["loop"], lambda v, lo: v / lo),
        "max_rel_diff": v["max_rel_diff"],
        "samples_s": t,
    }
    if "peak_mem_gib" in v:
        out["peak_mem_gib"] = v["peak_mem_gib"]
    return out
