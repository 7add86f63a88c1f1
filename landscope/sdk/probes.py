"""The engine's probes on a user's own network and training loop.

    probes = landscope.Probes(model, loss_fn, optimizer, run=run, landscape={"every": 20})
    for step, (x, y) in enumerate(batches):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        probes.measure(step, x, y)     # before optimizer.step(): at w_t, on B_t, with g_t
        optimizer.step()

Nothing here is a copy: the probe classes, `ProbeContext` and `Shadow` are the engine's
(worker/engine/probes), and the options are validated by the service's own pydantic classes
(server/spec.py ProbesSpec), so a probe of an SDK run means what it means in a service run.

Training with probes is bit-identical to training without, global random state included:
- probes never run the live model: they evaluate a `Shadow` (the engine's copy, made once);
- a forward pre-hook on `model` records every random state (torch's global CPU and CUDA
  generators, and any torch.Generator a module holds, as the engine's noisy BatchNorm does) at
  the start of each forward with autograd on. The last such forward before `measure` is the
  step's training forward: every probe pass is rewound to its start, so it sees the training
  step's dropout masks (l(0) is the training loss), and after the probes every state is put
  back where `measure` found it;
- activation statistics ride on that training forward (as in the engine): hooks are armed for
  it when the step it belongs to (the last measured step + 1, `start_step` at first) is due.
  If that guess misses (steps skipped), the forward is replayed on the shadow at w_t with the
  same random state: the same activations in train mode.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from server.spec import ProbesSpec
from worker.engine.introspect import ModelLayout, describe
from worker.engine.probes import Probe, ProbeContext
from worker.engine.probes.activations import ActivationsProbe
from worker.engine.probes.base import Shadow
from worker.engine.probes.basic import DistanceProbe, GradNormProbe
from worker.engine.probes.ics import IcsProbe
from worker.engine.probes.landscape import LandscapeProbe
from worker.engine.probes.sharpness import SharpnessProbe
from worker.engine.random_state import RandomState
from worker.engine.sink import MemorySink, MetricSink

Option = Mapping[str, Any] | BaseModel | int | None
OPTIONS = ("landscape", "ics", "grad_norm", "distance", "sharpness", "activations")


def probes_spec(mode: str = "train", **options: Option) -> ProbesSpec:
    """ProbesSpec from the SDK's keywords: a dict of the spec's fields, a spec object, or an int
    as shorthand for {"every": n}. Probes not named keep the service's defaults (grad_norm and
    distance every step, the rest off). Bad values raise pydantic's ValidationError, a
    ValueError that names the field (e.g. landscape.multipliers.0)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown probe(s) {unknown}; the probes are {list(OPTIONS)}")
    data: dict[str, Any] = {"mode": mode}
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, BaseModel):
            value = value.model_dump()
        elif isinstance(value, int) and not isinstance(value, bool):
            value = {"every": value}
        data[name] = value
    return ProbesSpec.model_validate(data)


class Probes:
    """The engine's probes, measured at the user's steps and emitted into `run` (a MetricSink:
    a landscope Run; None keeps them in `self.sink`, a MemorySink).

    `lr`: the step size the landscape probe scales (eta = multiplier x lr) and sharpness compares
    with (2/lr); None reads the optimizer's first parameter group at every measurement, so a
    schedule is followed. `seed` fixes the sampled activation units and the sharpness start
    vectors (the engine uses the run's seed). `example_input` describes the model now; without
    it, the first training forward is used.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn,
        optimizer: torch.optim.Optimizer,
        run: MetricSink | None = None,
        *,
        landscape: Option = None,
        ics: Option = None,
        grad_norm: Option = None,
        distance: Option = None,
        sharpness: Option = None,
        activations: Option = None,
        mode: str = "train",
        lr: float | None = None,
        seed: int = 0,
        start_step: int = 0,
        example_input: Tensor | None = None,
    ) -> None:
        self.spec = probes_spec(
            mode, landscape=landscape, ics=ics, grad_norm=grad_norm, distance=distance,
            sharpness=sharpness, activations=activations,
        )
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.sink: MetricSink = run if run is not None else MemorySink()
        self.lr, self.seed = lr, seed
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if self.spec.ics.every:  # its look-ahead steps a copy of the optimizer over them all
            mine = {id(p) for p in self.params.values()}
            if any(id(p) not in mine for g in optimizer.param_groups for p in g["params"]):
                raise ValueError("the ics probe needs an optimizer over trainable parameters "
                                 "of `model` only (it replays the optimizer's step)")
        self._views = {n: p.detach() for n, p in self.params.items()}  # follow in-place steps
        self.rng = RandomState(model)
        # The shadow is made before our hooks exist, so that it never carries them.
        self.shadow = Shadow(model, self.spec.mode)
        self.layout: ModelLayout | None = None
        self.probes: list[Probe] = []
        self._cheap = self._build_cheap()  # probes that need no layout
        self._next_step = start_step
        self._armed: contextlib.ExitStack | None = None
        self._captured_for: int | None = None  # the step the armed activation hooks were for
        self._tracing = False
        self._warned: set[str] = set()
        # Plain closures, not bound methods: a deep copy of the model (an EMA copy) copies
        # its hooks, and copying a bound method would copy these probes with it.
        self._hooks = [
            model.register_forward_pre_hook(lambda m, a: self._before_forward(m, a)),
            model.register_forward_hook(lambda m, a, o: self._after_forward(m)),
        ]
        if example_input is not None:
            self._describe(example_input)

    # -- set-up ----------------------------------------------------------------------------

    def _build_cheap(self) -> list[Probe]:
        p, out = self.spec, []
        if p.landscape.every:
            out.append(LandscapeProbe(p.landscape.every, p.landscape.multipliers,
                                      p.landscape.batched))
        if p.sharpness.every:
            out.append(SharpnessProbe(p.sharpness.every, p.sharpness.max_iters, self.seed,
                                      p.sharpness.tol))
        if p.grad_norm.every:
            out.append(GradNormProbe(p.grad_norm.every))
        if p.distance.every:  # w_0: the parameters when the probes were made
            out.append(DistanceProbe(p.distance.every, self._views))
        return out

    def _describe(self, example: Tensor) -> None:
        """The layout, then the probes in the engine's order (build_probes)."""
        self._tracing = True
        try:
            self.layout = layout = describe(self.model, example)
        finally:
            self._tracing = False
        p, probes = self.spec, []
        if p.activations.every:
            points, hook = layout.activation_points(p.activations.point)
            probes.append(ActivationsProbe(
                p.activations.every, points, layout.widths, self.seed, p.activations.bins,
                p.activations.range, hook,
            ))
        landscape = [q for q in self._cheap if isinstance(q, LandscapeProbe)]
        probes += landscape
        if p.ics.every:
            n = len(layout.weight_layers)
            bad = [i for i in p.ics.layers if i > n]
            if bad:
                raise ValueError(f"ics.layers {bad}: the model has {n} weight layers "
                                 f"({', '.join(layout.weight_names)})")
            index = {k: v for k, v in layout.param_layer_index().items() if k in self.params}
            probes.append(IcsProbe(p.ics.every, p.ics.layers, layout.weight_param_names(), index))
        probes += [q for q in self._cheap if q not in landscape]
        self.probes = probes

    # -- hooks on the user's model ------------------------------------------------------------

    def _before_forward(self, module: nn.Module, args: tuple) -> None:
        if self._tracing or module is not self.model or not torch.is_grad_enabled():
            return  # describe's own pass, a deep copy of the model, an evaluation
        self._disarm()
        self.rng.mark_step_start()
        if self.layout is None and args:
            self._describe(args[0])
        act = self._activations()
        if act is not None and act.due(self._next_step):
            self._armed = contextlib.ExitStack()
            self._armed.enter_context(act.on_train_forward(self.model))
            self._captured_for = self._next_step

    def _after_forward(self, module: nn.Module) -> None:
        if module is self.model:
            self._disarm()

    def _disarm(self) -> None:
        if self._armed is not None:
            self._armed.close()
            self._armed = None

    def _activations(self) -> ActivationsProbe | None:
        return next((q for q in self.probes if isinstance(q, ActivationsProbe)), None)

    def remove(self) -> None:
        """Take the hooks off the model (the probes measure nothing after this)."""
        self._disarm()
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # -- measuring --------------------------------------------------------------------------

    def measure(self, step: int, x: Tensor, y: Tensor) -> dict[str, float]:
        """Every probe due at `step`, at w_t on (x, y) with g_t from the parameters' .grad:
        call it after loss.backward() and before optimizer.step(). Returns the scalars
        measured (also emitted into the run)."""
        if not self._hooks:
            raise RuntimeError("these probes were removed")
        step = int(step)
        self._next_step = step + 1
        if self.layout is None:
            self._describe(x)
        due = [q for q in self.probes if q.due(step)]
        if not due:
            return {}
        if not self.rng.marked:
            self._warn("no-forward", "measure() saw no forward of the model with autograd on: "
                       "probes draw random numbers (dropout) afresh instead of the training "
                       "step's")
            self.rng.mark_step_start()
        after_step = self.rng.get_state()
        lr = self.lr if self.lr is not None else float(self.optimizer.param_groups[0]["lr"])
        ctx = ProbeContext(
            step=step, net=self.model, params=self._views, grads=self._grads(), x=x, y=y,
            loss_fn=self.loss_fn, lr=lr, optimizer=self.optimizer, noise=self.rng,
            mode=self.spec.mode, shadow=self.shadow,
        )
        measured: dict[str, float] = {}
        try:
            for probe in due:
                started = time.perf_counter()
                if isinstance(probe, ActivationsProbe) and self._captured_for != step:
                    self._replay_activations(probe, ctx)
                out = probe.measure(ctx)
                out.scalars[f"probe_time/{probe.name}"] = time.perf_counter() - started
                self.sink.scalars(step, out.scalars)
                measured.update(out.scalars)
                if out.eta_records:
                    self.sink.eta_records(step, probe.name, out.eta_records)
                if out.distributions:
                    self.sink.distributions(step, out.distributions)
        finally:
            self.rng.set_state(after_step)
            self._captured_for = None
        return measured

    def _grads(self) -> dict[str, Tensor]:
        """g_t; a parameter the loss does not reach has no .grad: its gradient is zero."""
        return {n: p.grad if p.grad is not None else torch.zeros_like(p)
                for n, p in self.params.items()}

    def _replay_activations(self, probe: ActivationsProbe, ctx: ProbeContext) -> None:
        """The training forward's activations, recomputed on the shadow at w_t with the step's
        random state (the hooks missed the forward: `measure` was not called at every step)."""
        names = {id(m): n for n, m in self.model.named_modules()}
        shadow_modules = dict(self.shadow.module.named_modules())
        live = probe.points
        probe.points = [shadow_modules[names[id(m)]] for m in live]
        try:
            with probe.on_train_forward(self.shadow.module):
                ctx.loss_at(ctx.params)
        finally:
            probe.points = live

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def __enter__(self) -> Probes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
