"""The training loop, with probes at their scheduled steps.

One step t, in order:
  1. B_t = the data order's batch for t; the noise stream marks where step t starts;
  2. forward and backward at w_t (activation hooks ride on this forward at due steps): g_t;
  3. the loss at step t goes to the sink (the accuracy too, computed for a window of steps at
     once: see ACC_WINDOW); a non-finite loss ends the run as diverged here unless the spec
     says continue;
  4. due probes measure at (w_t, g_t, B_t), then the noise stream is put back where step 2
     left it, so probes change nothing of the trajectory;
  5. test evaluation at w_t when due; then the optimiser step makes w_{t+1};
  6. a checkpoint when due.
Seconds of training since the run began (`time/wall_s`, worker/engine/wallclock.py) go to the
sink at about every 1 % of the steps, before each checkpoint and at the last step; a checkpoint
keeps the count, so a resumed run continues it. Reading the clock touches nothing else.
Every metric recorded at step t is measured at w_t. After the last step the test set is
evaluated once more at w_T, recorded at step T. With a snapshot store, w_t (weights and BN
buffers as they are before step t's forward) is saved at the top of step t when the spec's
snapshot schedule says so, and w_T after the last step (worker/engine/snapshots.py).

Before each step the caller's `should_stop` may end the run: "cancel" (or True) ends it for
good; "pause" ends it to be continued elsewhere, so the loop checkpoints at the step where it
stopped and a resumed run trains no step twice.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from server.spec import RunSpec
from worker.engine.checkpoint import CheckpointStore
from worker.engine.data import BatchOrder, load_dataset
from worker.engine.determinism import deterministic_algorithms
from worker.engine.environment import environment
from worker.engine.losses import LOSSES, correct_per_row, evaluate
from worker.engine.model_size import model_size
from worker.engine.models import build_model
from worker.engine.probes import ProbeContext, build_probes
from worker.engine.probes.base import Shadow
from worker.engine.random_state import RandomState
from worker.engine.sink import MetricSink
from worker.engine.snapshots import SnapshotStore, snapshot_state
from worker.engine.state import NoiseStream, derive_seed, resolve_device
from worker.engine.threads import resolve_threads, torch_threads
from worker.engine.wallclock import WALL_POINTS, WallClock

Status = Literal["succeeded", "diverged", "cancelled", "paused"]
StopRequest = Literal["cancel", "pause"]
StopFn = Callable[[], StopRequest | bool | None]  # falsy: go on; True means "cancel"
ProgressFn = Callable[[int, int, float], None]  # (steps done, total steps, last loss)

# train/acc of step t is the accuracy on B_t of the logits of step t's training forward, as
# ever; it is computed for up to this many steps at once (one argmax over their logits instead
# of four small ops and a host sync per step) and reaches the sink at the end of each aligned
# window of steps, before every checkpoint and when the loop ends, whatever the reason.
ACC_WINDOW = 32


@dataclass
class RunResult:
    status: Status
    next_step: int  # the first step not trained yet
    last_loss: float
    diverged_at: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    first_step: int = 0  # the step this call started at: 0, or the checkpoint it resumed


class Trainer:
    """Builds a run from its spec (data, model, optimiser, probes) and trains it."""

    # Periodic time/wall_s points per run (None: only at flushes and the end; tests vary it).
    wall_points: int | None = WALL_POINTS

    def __init__(self, spec: RunSpec, data_dir: Path, device: str | torch.device | None = None,
                 threads: int | None = None):
        """`threads`: the launcher's thread setting (LANDSCOPE_TORCH_THREADS; 0 = all cores),
        used when the spec sets none (threads.py). Building and training both run with that
        count, and the caller's is put back after each."""
        self.spec = spec
        self.device = torch.device(device) if device is not None else resolve_device(spec.device)
        self.threads = resolve_threads(spec.threads, threads)
        self.dtype: torch.dtype = getattr(torch, spec.dtype)
        if spec.bf16 and self.device.type != "cuda":
            raise ValueError("bf16 autocast needs a CUDA device; set bf16=false on CPU")
        with self._numerics():
            self._build(spec, Path(data_dir))

    def _numerics(self) -> contextlib.AbstractContextManager:
        """The run's thread count and determinism switches in force, the caller's put back
        afterwards (threads.py, determinism.py)."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch_threads(self.threads))
        stack.enter_context(deterministic_algorithms(self.spec.deterministic, self.device))
        return stack

    def _build(self, spec: RunSpec, data_dir: Path) -> None:
        data = load_dataset(spec, data_dir)
        self.data = data.to(self.device, self.dtype)
        self.order = BatchOrder(data.n_train, spec.batch_size, spec.seed)
        self.noise = NoiseStream(spec.seed, self.device)
        # Built (and initialised) in float32 whatever the spec's dtype, then cast: a float64
        # run starts from exactly the float32 run's weights, so the two differ by rounding
        # in training only.
        self.net = build_model(spec, data.in_shape, data.n_outputs, self.noise.generator)
        # What probes rewind and restore: the noise generator and, for a plug-in network,
        # the global generators its dropout draws from (random_state.py).
        self.rng = RandomState(self.net, self.noise.generator)
        self.net.to(self.device, self.dtype).train()
        self.loss_fn = LOSSES[spec.loss]
        self.optimizer = self._make_optimizer()
        self.params = dict(self.net.named_parameters())
        # w_t for the probes: detached views that follow the optimiser's in-place updates.
        self._param_views = {n: p.detach() for n, p in self.params.items()}
        self.probes = build_probes(spec, self.net, self.params)
        self._shadow: Shadow | None = None  # the probes' copy of the net (see probes/base.py)
        self._acc_pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.info = {
            "device": str(self.device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "data": data.info,
            "model": getattr(self.net, "info", {}),
            "n_params": sum(p.numel() for p in self.params.values()),
            # What analysis costs need of a plug-in; the forward it takes draws nothing.
            "size": model_size(self.net, self.data, (self.noise.generator,)),
            # With this run's thread count in force (environment.py).
            "environment": environment(self.device, self.dtype),
            # What a step is in samples and epochs (RunOut.x_axis).
            "x_axis": self.x_axis(),
        }
        self._clock = WallClock(spec.steps, points=self.wall_points)

    def x_axis(self) -> dict[str, int | None]:
        """What a step is in samples and epochs: the batch size actually drawn (None: full
        batch) and the training set's size as loaded (BatchOrder drops an epoch's incomplete
        last batch, so an epoch is n_train // batch_size steps)."""
        order = self.order
        return {"batch_size": None if order.full_batch else order.batch_size,
                "train_size": order.n}

    def _make_optimizer(self) -> torch.optim.Optimizer:
        s = self.spec
        if s.optimizer == "sgd":
            return torch.optim.SGD(
                self.net.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
            )
        return torch.optim.Adam(self.net.parameters(), lr=s.lr, weight_decay=s.weight_decay)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.spec.bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.order.full_batch:
            return self.data.x_train, self.data.y_train
        idx = self.order.indices(step).to(self.device, non_blocking=True)
        return self.data.x_train[idx], self.data.y_train[idx]

    # -- the loop ---------------------------------------------------------------------------

    def run(self, sink: MetricSink, **kwargs: Any) -> RunResult:
        """Train (see _run for the keyword arguments) with torch's global generators seeded
        from the spec, and the caller's put back afterwards. The engine's networks never draw
        from them, but a plug-in's dropout does: seeded here, its masks are the same whatever
        ran before in the process (a worker runs many runs); a resumed run then takes the
        state its checkpoint saved."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self._numerics():
            torch.manual_seed(derive_seed(self.spec.seed, "global-rng"))
            return self._run(sink, **kwargs)

    def _run(
        self,
        sink: MetricSink,
        *,
        should_stop: StopFn | None = None,
        checkpoints: CheckpointStore | None = None,
        progress: ProgressFn | None = None,
        max_steps: int | None = None,
        snapshots: SnapshotStore | None = None,
        wall_after: tuple[int, float] | None = None,
    ) -> RunResult:
        """Train from the latest checkpoint (or from scratch) to the spec's last step.

        `max_steps` bounds the steps taken in this call (the run is then "paused", with no
        checkpoint of its own: tests use it to stand for a crash); `should_stop` is checked
        before every step: "cancel" (or True) ends the run "cancelled", "pause" ends it
        "paused" with a checkpoint at that step (when there is a store). `snapshots` receives
        w_s at every scheduled step s not already in it (a resumed run saves no step twice).
        `wall_after`: (newest step, largest seconds) of the time/wall_s points the sink
        already holds. After a crash an idempotent sink keeps the dead attempt's points past
        the checkpoint (and ignores rewrites of them), so the count goes on from the larger
        of those seconds and the checkpoint's, and the first new point comes after that step:
        time/wall_s stays monotone and counts the lost work, which was wall time too.
        """
        spec = self.spec
        self._wall_base = 0.0
        start = self._restore(checkpoints.load_latest()) if checkpoints else 0
        # The clock starts here (data and model are built): training time, continued from the
        # checkpoint's count when resuming.
        stored_step, stored_s = wall_after if wall_after is not None else (None, 0.0)
        clock = self._clock = WallClock(spec.steps, base=max(self._wall_base, stored_s),
                                        points=self.wall_points)
        if stored_step is not None:
            clock.resume_after(stored_step)
        end = spec.steps if max_steps is None else min(spec.steps, start + max_steps)
        classify = self.data.task == "classification"
        last_loss, status, diverged_at = math.nan, "paused", None
        next_step = start  # the first step whose loss is not recorded yet
        saved_at = start  # the step of the newest checkpoint (the one resumed, if any)
        pause_requested = reached_end = False
        self._acc_pending = []
        snapshot_due = self._snapshot_schedule(snapshots)
        for step in range(start, end):
            request = should_stop() if should_stop is not None else None
            if request:
                pause_requested = request == "pause"
                status = "paused" if pause_requested else "cancelled"
                break
            if snapshot_due(step):  # w_t: nothing of step t has touched the net yet
                snapshots.save(step, snapshot_state(step, spec.model_dump_json(), self.net))
            last_loss, due, batch = self._forward_backward(step, sink, classify)
            next_step = step + 1
            if not math.isfinite(last_loss):
                diverged_at = step if diverged_at is None else diverged_at
                if spec.on_nonfinite == "stop":
                    status = "diverged"
                    break
            if due:
                self._measure(step, due, *batch, sink)
            if spec.eval_every and step % spec.eval_every == 0:
                self._evaluate(step, sink)
            self.optimizer.step()
            if next_step % ACC_WINDOW == 0:
                self._emit_acc(sink)
            if clock.due(step):
                self._emit_wall(sink, step)
            if checkpoints and spec.checkpoint_every and next_step % spec.checkpoint_every == 0:
                self._emit_acc(sink)
                self._emit_wall(sink, step)
                sink.flush()  # metrics up to the checkpoint are durable before it is
                checkpoints.save(next_step, self._state(next_step))
                saved_at = next_step
            if progress is not None:
                progress(next_step, spec.steps, last_loss)
        else:
            if end == spec.steps:
                reached_end = True
                status = "diverged" if diverged_at is not None else "succeeded"
                if spec.eval_every:
                    self._evaluate(spec.steps, sink)
                if snapshot_due(spec.steps):  # w_T, after the last update
                    snapshots.save(
                        spec.steps, snapshot_state(spec.steps, spec.model_dump_json(), self.net)
                    )
        if next_step > start:  # the last step trained (a point at T itself: the whole run)
            self._emit_wall(sink, next_step - 1)
            if reached_end:
                self._emit_wall(sink, spec.steps)
        self._emit_acc(sink)
        sink.flush()  # as before a periodic checkpoint: metrics first, then the state
        if pause_requested and checkpoints and next_step != saved_at:
            # The stop came before step next_step began: the state is exactly w_{next_step}.
            checkpoints.save(next_step, self._state(next_step))
        return RunResult(status, next_step, last_loss, diverged_at, self.info, first_step=start)

    def _emit_wall(self, sink: MetricSink, step: int) -> None:
        if (point := self._clock.point(step)) is not None:
            sink.scalars(step, point)

    def _snapshot_schedule(self, store: SnapshotStore | None) -> Callable[[int], bool]:
        """Whether step s is saved now: scheduled, and not in the store yet (resume)."""
        if store is None:
            return lambda step: False
        cfg, last, have = self.spec.snapshots, self.spec.steps, set(store.steps())
        return lambda step: step not in have and cfg.due(step, last)

    def _forward_backward(self, step: int, sink: MetricSink, classify: bool):
        """Steps 1-3 of the docstring: g_t in the parameters' .grad, the loss in the sink."""
        x, y = self.batch(step)
        due = [p for p in self.probes if p.due(step)] if self.probes else []
        if due or self.spec.bf16:
            with contextlib.ExitStack() as hooks:
                if due:  # only probes rewind the noise or hook the forward: skip both otherwise
                    self.rng.mark_step_start()
                    for p in due:
                        hooks.enter_context(p.on_train_forward(self.net))
                with self.autocast():
                    out = self.net(x)
                loss = self.loss_fn(out.float() if self.spec.bf16 else out, y)
        else:  # the common step: no hooks, no autocast, nothing but the model
            out = self.net(x)
            loss = self.loss_fn(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = loss.item()
        sink.scalars(step, {"train/loss": value})
        if classify:
            self._acc_pending.append((step, out.detach(), y))
        return value, due, (x, y)

    def _emit_acc(self, sink: MetricSink) -> None:
        """train/acc of the pending steps: the same values as per step, computed in one go."""
        pending, self._acc_pending = self._acc_pending, []
        if not pending:
            return
        sizes = [len(y) for _, _, y in pending]
        hits = correct_per_row(torch.cat([o for _, o, _ in pending]),
                               torch.cat([y for _, _, y in pending]))
        if len(set(sizes)) == 1:
            counts = hits.view(len(pending), sizes[0]).sum(dim=1).tolist()
        else:
            counts = [int(h.sum()) for h in hits.split(sizes)]
        for (step, _, _), c, n in zip(pending, counts, sizes, strict=True):
            sink.scalars(step, {"train/acc": c / n})

    def _measure(self, step: int, due: list, x, y, sink: MetricSink) -> None:
        after_training_forward = self.rng.get_state()
        if self._shadow is None:  # made on the first probed step, reused after
            self._shadow = Shadow(self.net, self.spec.probes.mode)
        ctx = ProbeContext(
            step=step,
            net=self.net,
            params=self._param_views,
            grads={n: p.grad for n, p in self.params.items()},
            x=x,
            y=y,
            loss_fn=self.loss_fn,
            lr=self.spec.lr,
            optimizer=self.optimizer,
            noise=self.rng,
            mode=self.spec.probes.mode,
            autocast=self.autocast,
            shadow=self._shadow,
        )
        for probe in due:
            started = time.perf_counter()
            out = probe.measure(ctx)
            out.scalars[f"probe_time/{probe.name}"] = time.perf_counter() - started
            sink.scalars(step, out.scalars)
            if out.eta_records:
                sink.eta_records(step, probe.name, out.eta_records)
            if out.distributions:
                sink.distributions(step, out.distributions)
        self.rng.set_state(after_training_forward)

    def _evaluate(self, step: int, sink: MetricSink) -> None:
        if self.data.x_test is None:
            return
        d = self.data
        sink.scalars(
            step,
            evaluate(self.net, self.spec.loss, d.x_test, d.y_test, self.spec.eval_batch_size,
                     self.autocast),
        )

    # -- checkpoints ------------------------------------------------------------------------

    def _state(self, next_step: int) -> dict[str, Any]:
        return {
            "step": next_step,
            "spec": self.spec.model_dump_json(),
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"noise": self.noise.get_state(), "torch": torch.get_rng_state()},
            "wall_s": self._clock.elapsed(),  # a resumed run continues time/wall_s from here
        }

    def _restore(self, state: dict[str, Any] | None) -> int:
        if state is None:
            return 0
        saved = RunSpec.model_validate_json(state["spec"])
        if saved != self.spec:
            raise ValueError("the checkpoint belongs to a different spec; refusing to resume")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.noise.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        self._wall_base = float(state.get("wall_s", 0.0))  # 0: a checkpoint from before it
        return int(state["step"])


def train(spec: RunSpec, sink: MetricSink, *, data_dir: Path, **run_kwargs: Any) -> RunResult:
    """Build and run in one call (see Trainer.run for the keyword arguments)."""
    device = run_kwargs.pop("device", None)
    threads = run_kwargs.pop("threads", None)
    return Trainer(spec, data_dir, device, threads).run(sink, **run_kwargs)
