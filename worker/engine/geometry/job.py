"""An analysis of one run's snapshots: prepare each step, then evaluate its grid in chunks.

The same object serves the CLI (run_all, in one process) and the Celery tasks (prepare on one
worker, which saves the directions; run_chunk on any worker, from the loaded directions):

    job = AnalysisJob(run_spec, spec, data_dir, DirectorySnapshotStore(...), device)
    job.prepare(step, sink); torch.save(job.directions_state(step), path)
    job.load_directions(torch.load(path, weights_only=True)); job.run_chunk(step, rng, sink)

Determinism across cuts: grid points are evaluated in fixed groups of K consecutive flat
indices aligned on multiples of K (one batched call per group), whatever the chunk; a chunk
evaluates every group it touches and writes only its own indices. So each point always comes
from the very same call, and a surface cut in chunks equals one big chunk bit for bit. K is
GROUP (8) on the CPU and as large as memory allows on a GPU (group_size.py); it is chosen when
the first step is prepared and saved with the directions, so every chunk uses the same K. With
chunk_points a multiple of K (K divides the default 64) nothing is evaluated twice.

An analysis only reads the run's snapshots; the networks it evaluates are private copies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from server.analysis_spec import AnalysisSpec, chunks
from server.spec import RunSpec
from worker.engine.data import load_dataset
from worker.engine.geometry import job_prepare as jp
from worker.engine.geometry.evaluate import GridEvaluator, LossSum, eval_subset
from worker.engine.geometry.group_size import GROUP, choose_group
from worker.engine.geometry.hessian import network_hvp, spectrum
from worker.engine.geometry.job_numerics import JobNumerics
from worker.engine.geometry.sink import AnalysisSink, GridValue
from worker.engine.models import build_model
from worker.engine.snapshots import SnapshotStore
from worker.engine.state import derive_seed, resolve_device
from worker.engine.threads import resolve_threads

STATE_FORMAT = 1
StopFn = Callable[[], Any]
ProgressFn = Callable[[int, int], None]  # (units done, units in all): grid points + 1 per step


@dataclass
class PreparedStep:
    step: int
    centre_step: int  # the snapshot theta comes from (step 0 for interpolation from init)
    theta: dict[str, Tensor]
    directions: jp.DirectionSet
    evaluator: GridEvaluator
    test_evaluator: GridEvaluator | None


class AnalysisJob:
    def __init__(self, run_spec: RunSpec, spec: AnalysisSpec, data_dir: Path,
                 snapshots: SnapshotStore, device: str | torch.device | None = None,
                 other_snapshots: SnapshotStore | None = None,
                 threads: int | None = None) -> None:
        """`threads`: the launcher's thread setting (LANDSCOPE_TORCH_THREADS), used when the
        run's spec sets none, as for training (threads.py); the run's `deterministic` switch
        holds too (job_numerics.py)."""
        _check_other(spec, other_snapshots)
        device = torch.device(device) if device is not None else resolve_device(run_spec.device)
        # In the run's precision, as the Trainer builds it: a float64 run is analysed in float64.
        dtype = getattr(torch, run_spec.dtype)
        data = load_dataset(run_spec, Path(data_dir)).to(torch.device("cpu"), dtype)
        if spec.test_set and data.x_test is None:
            raise ValueError(f"dataset {run_spec.dataset!r} has no test set")
        gen = torch.Generator(device=device)  # replaced by the evaluator's own (noisy BN)
        net = build_model(run_spec, data.in_shape, data.n_outputs, gen).to(device, dtype)
        self.run_spec = run_spec
        self.numerics = JobNumerics(resolve_threads(run_spec.threads, threads),
                                    run_spec.deterministic, device, dtype)
        self._setup(spec, net, run_spec.loss, (data.x_train, data.y_train),
                    test=(data.x_test, data.y_test) if spec.test_set else None,
                    classify=data.task == "classification", snapshots=snapshots,
                    other_snapshots=other_snapshots, device=device,
                    batch_size=spec.batch_size or run_spec.batch_size, norm=run_spec.norm)

    @classmethod
    def from_model(cls, net: torch.nn.Module, loss: str | LossSum,
                   data: tuple[Tensor, Tensor], spec: AnalysisSpec, snapshots: SnapshotStore,
                   *, classify: bool, test: tuple[Tensor, Tensor] | None = None,
                   device: str | torch.device | None = None,
                   other_snapshots: SnapshotStore | None = None,
                   norm: str | None = None, deterministic: bool = False) -> AnalysisJob:
        """A job on a network built elsewhere (the SDK: a user's own model) instead of a run
        spec: `net` gives the architecture (its weights come from `snapshots`), `data` the
        set the evaluation subset is drawn from (as a run's training set), `loss` a loss name
        or a LossSum (evaluate.py). `norm` is only recorded in the meta. The caller's
        process keeps its thread count; `deterministic` turns deterministic kernels on for
        the job's work (a GPU's spectrum then comes back bit for bit)."""
        _check_other(spec, other_snapshots)
        if spec.test_set and test is None:
            raise ValueError("test_set needs test data")
        device = torch.device(device) if device is not None else next(net.parameters()).device
        job = cls.__new__(cls)
        job.run_spec = None
        job.numerics = JobNumerics(None, deterministic, device,
                                   next(net.parameters()).dtype)
        job._setup(spec, net.to(device), loss, data, test=test, classify=classify,
                   snapshots=snapshots, other_snapshots=other_snapshots, device=device,
                   batch_size=spec.batch_size, norm=norm)
        return job

    def _setup(self, spec: AnalysisSpec, net: torch.nn.Module, loss: str | LossSum,
               train: tuple[Tensor, Tensor], *, test: tuple[Tensor, Tensor] | None,
               classify: bool, snapshots: SnapshotStore,
               other_snapshots: SnapshotStore | None, device: torch.device,
               batch_size: int | None, norm: str | None) -> None:
        self.spec, self.loss, self.classify = spec, loss, classify
        self.store, self.other = snapshots, other_snapshots
        self.device = device
        x_all, y_all = train
        n = len(x_all)
        idx = eval_subset(n, jp.subset_size(spec.eval_samples, n), spec.eval_seed)
        self.x, self.y = x_all[idx].to(self.device), y_all[idx].to(self.device)
        self.recal_x = None
        if spec.bn_mode == "recalibrated":
            r_seed = derive_seed(spec.eval_seed, "recalibration")
            r_idx = eval_subset(n, jp.subset_size(spec.recalibration_samples, n), r_seed)
            self.recal_x = x_all[r_idx].to(self.device)
        self.test = None
        if test is not None:
            self.test = (test[0].to(self.device), test[1].to(self.device))
        self.batch_size = batch_size or len(self.x)
        self.net = net
        self.names = [n for n, _ in self.net.named_parameters()]
        self.group: int | None = None  # grid points per evaluation call: set by prepare
        self.xs = spec.x_axis().values()
        y_axis = spec.y_axis()
        self.ys = y_axis.values() if y_axis is not None else None
        self.meta = jp.meta(
            norm, spec, eval_samples=len(self.x), batch_size=self.batch_size,
            recal_samples=None if self.recal_x is None else len(self.recal_x),
            test_samples=None if self.test is None else len(self.test[0]), device=self.device,
            dtype=next(self.net.parameters()).dtype)
        self._prepared: dict[int, PreparedStep] = {}

    # -- steps and networks --------------------------------------------------------------

    def steps(self) -> list[int]:
        """The analysed steps, resolved against the store (None: the last saved step)."""
        have = self.store.steps()
        if not have:
            raise ValueError("the run has no snapshots: train it with a snapshot store")
        want = self.spec.steps if self.spec.steps is not None else [have[-1]]
        _require(want, have, "this run")
        d = self.spec.directions
        if d.kind == "interpolation" and d.source == "init":
            _require([0], have, "this run (interpolation from init)")
        if d.kind == "interpolation" and d.source == "run":
            _require(want, self.other.steps(), f"run {d.other_run}")
        return want

    def _load(self, step: int, store: SnapshotStore | None = None) -> Mapping[str, Tensor]:
        return (store or self.store).load(step)["model"]

    def _evaluators(self, state: Mapping[str, Tensor]) -> tuple[GridEvaluator, Any]:
        """Evaluators of the network with `state` (weights and buffers): each keeps a copy."""
        self.net.load_state_dict(state)
        kw = dict(bn_mode=self.spec.bn_mode, batch_size=self.batch_size, recal_x=self.recal_x,
                  classify=self.classify, max_batched_points=self.group or GROUP,
                  noise_seed=self.spec.eval_seed)
        ev = GridEvaluator(self.net, self.loss, self.x, self.y, **kw)
        test = None if self.test is None else GridEvaluator(self.net, self.loss, *self.test, **kw)
        return ev, test

    def _params(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return jp.params_of(state, self.names, self.device)

    # -- prepare -------------------------------------------------------------------------

    def prepare(self, step: int, sink: AnalysisSink) -> PreparedStep:
        """Directions and every non-grid value of `step`, written to sink.values, in the
        job's numerics (job_numerics.py)."""
        with self.numerics():
            return self._prepare(step, sink)

    def _prepare(self, step: int, sink: AnalysisSink) -> PreparedStep:
        spec, d = self.spec, self.spec.directions
        centre = 0 if d.kind == "interpolation" and d.source == "init" else step
        state = self._load(centre)
        theta = self._params(state)
        ev, test_ev = self._evaluators(state)
        self._choose_group(ev, test_ev)
        count = 2 if spec.kind in ("surface", "trajectory") else 1
        values: dict[str, Any] = {"meta": {**self.meta, "threads": torch.get_num_threads()},
                                  "evaluation": {"group": self.group, "vmap": ev.vmap}}
        if spec.kind == "spectrum":
            op, n = network_hvp(ev.loss_fn_of_params(theta), theta)
            values["spectrum"] = spectrum(op, n, spec.spectrum, grad=op.gradient(),
                                          seed=derive_seed(d.seed, "spectrum"))
            dirs = jp.DirectionSet([], [], {})
        elif d.kind == "random":
            dirs = jp.random_set(theta, spec, count)
        elif d.kind == "gradient":
            dirs = jp.gradient_set(theta, ev.gradient(theta))
        elif d.kind == "hessian":
            dirs = jp.hessian_set(theta, ev.loss_fn_of_params(theta), spec, count)
        elif d.kind == "pca":
            cpu = torch.device("cpu")  # the path may be long: it stays on the CPU
            path = [(s, jp.params_of(self._load(s), self.names, cpu))
                    for s in self.store.steps() if s <= step]
            plane = jp.pca_plane(theta, path, count)
            dirs = plane.directions
            if spec.kind == "trajectory":
                values["trajectory"] = self._trajectory(plane, theta, ev)
        else:  # interpolation
            other = self.other if d.source == "run" else self.store
            state_b = self._load(step, other)
            dirs = jp.interpolation_set(theta, self._params(state_b))
            values["endpoints"] = {
                "a": {"step": centre, "run": "this", **self._at(ev, theta)},
                "b": {"step": step, "run": "other" if d.source == "run" else "this",
                      **self._at(self._evaluators(state_b)[0], self._params(state_b))},
            }
        values["directions"] = {"kind": d.kind if spec.kind != "spectrum" else None,
                                "labels": dirs.labels, "centre_step": centre, **dirs.info}
        prep = PreparedStep(step, centre, theta, dirs, ev, test_ev)
        self._prepared[step] = prep
        sink.values(step, {**values, **self.numerics.record(step)})
        return prep

    def _choose_group(self, ev: GridEvaluator, test_ev: GridEvaluator | None) -> None:
        """K, once per job, then given to the step's evaluators (group_size.py)."""
        evs = [e for e in (ev, test_ev) if e is not None]
        if self.group is None:
            self.group = choose_group(evs, self.grid_points(), self.spec.chunk_points)
        for e in evs:
            if e.group != self.group:
                e.set_group(self.group)

    def _at(self, ev: GridEvaluator, theta: dict[str, Tensor]) -> dict[str, Any]:
        """The loss (and accuracy) at theta itself: theta + 0 * d is theta exactly."""
        zero = {k: torch.zeros_like(v) for k, v in theta.items()}
        v = ev.evaluate(theta, [zero], [(0.0,)])[0]
        return {"loss": v.loss, "acc": v.acc}

    def _trajectory(self, plane: jp.Plane, theta: dict[str, Tensor], ev: GridEvaluator
                    ) -> dict[str, Any]:
        """Each snapshot's coordinates, its true loss, and the plane's surface there."""
        true_loss, true_acc = [], []
        for s in plane.steps:
            state = self._load(s)
            # Only "running" reads the snapshot's own buffers; the other modes ignore them.
            own = self._evaluators(state)[0] if self.spec.bn_mode == "running" else ev
            v = self._at(own, self._params(state))
            true_loss.append(v["loss"])
            true_acc.append(v["acc"])
        dirs = plane.directions.directions
        on_plane = [ev.evaluate(theta, dirs, [tuple(c)])[0] for c in plane.coords]
        return {"steps": plane.steps, "coords": plane.coords, "loss": true_loss,
                "acc": true_acc, "surface_loss": [v.loss for v in on_plane],
                "surface_acc": [v.acc for v in on_plane],
                "explained_variance": plane.directions.info["explained_variance"]}

    # -- directions for other workers ----------------------------------------------------

    def directions_state(self, step: int) -> dict[str, Any]:
        """What a chunk on another worker needs besides the snapshots (torch.save-able)."""
        p = self._require_prepared(step)
        return {"format": STATE_FORMAT, "step": step, "centre_step": p.centre_step,
                "group": self.group,
                "analysis": self.spec.model_dump_json(), "labels": p.directions.labels,
                "info": p.directions.info,
                "directions": [{k: v.detach().cpu() for k, v in di.items()}
                               for di in p.directions.directions]}

    def load_directions(self, state: Mapping[str, Any]) -> PreparedStep:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"directions format {state.get('format')} != {STATE_FORMAT}")
        if AnalysisSpec.model_validate_json(state["analysis"]) != self.spec:
            raise ValueError("these directions belong to another analysis spec")
        step, centre = int(state["step"]), int(state["centre_step"])
        # The preparing worker's K (states saved before K was chosen per device: GROUP).
        self.group = int(state.get("group") or GROUP)
        snap = self._load(centre)
        theta = self._params(snap)
        dirs = []
        for di in state["directions"]:
            if di.keys() != theta.keys() or any(di[k].shape != theta[k].shape for k in theta):
                raise ValueError("the directions do not fit this run's parameters")
            dirs.append({k: di[k].to(device=self.device, dtype=theta[k].dtype) for k in theta})
        ev, test_ev = self._evaluators(snap)
        prep = PreparedStep(step, centre, theta,
                            jp.DirectionSet(dirs, list(state["labels"]), dict(state["info"])),
                            ev, test_ev)
        self._prepared[step] = prep
        return prep

    def save_directions(self, step: int, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.directions_state(step), tmp)
        os.replace(tmp, path)

    def _require_prepared(self, step: int) -> PreparedStep:
        if step not in self._prepared:
            raise RuntimeError(f"step {step} is not prepared: call prepare() or "
                               "load_directions() first")
        return self._prepared[step]

    # -- the grid ------------------------------------------------------------------------

    def grid_points(self) -> int:
        return self.spec.grid_points()

    def coords(self, index: int) -> tuple[float, ...]:
        iy, ix = divmod(index, len(self.xs))
        return (self.xs[ix],) if self.ys is None else (self.xs[ix], self.ys[iy])

    def run_chunk(self, step: int, indices: Iterable[int], sink: AnalysisSink,
                  should_stop: StopFn | None = None) -> int:
        """Evaluate these flat grid indices (see the module docstring) in the job's numerics,
        recording them beside the values; returns how many were written (fewer when
        should_stop said so, checked before each group)."""
        with self.numerics():
            return self._run_chunk(step, indices, sink, should_stop)

    def _run_chunk(self, step: int, indices: Iterable[int], sink: AnalysisSink,
                   should_stop: StopFn | None) -> int:
        prep = self._require_prepared(step)
        total = self.grid_points()
        wanted = indices if isinstance(indices, range) else set(indices)
        if any(not 0 <= i < total for i in wanted):
            raise ValueError(f"grid indices must lie in [0, {total})")
        written = 0
        k = prep.evaluator.group
        for g in sorted({i // k for i in wanted}):
            if should_stop is not None and should_stop():
                break
            members = range(g * k, min((g + 1) * k, total))
            coords = [self.coords(i) for i in members]
            dirs = prep.directions.directions
            vals = prep.evaluator.evaluate(prep.theta, dirs, coords)
            tvals = (prep.test_evaluator.evaluate(prep.theta, dirs, coords)
                     if prep.test_evaluator is not None else [None] * len(coords))
            rows = [GridValue(i, v.loss, v.acc, t.loss if t else None, t.acc if t else None)
                    for i, v, t in zip(members, vals, tvals, strict=True) if i in wanted]
            sink.points(step, rows)
            written += len(rows)
        extra = self.numerics.record(step) if written else {}
        if prep.evaluator.fallback is not None:  # vmap gave up: say so beside the values
            extra["evaluation_fallback"] = prep.evaluator.fallback
        if extra:
            sink.values(step, extra)
        return written

    def run_all(self, sink: AnalysisSink, progress: ProgressFn | None = None,
                should_stop: StopFn | None = None) -> bool:
        """Every step, in-process: prepare, then every chunk. False if stopped early."""
        steps, n = self.steps(), self.grid_points()
        total, done = len(steps) * (n + 1), 0
        for step in steps:
            if should_stop is not None and should_stop():
                return False
            losses: dict[int, float] = {}
            recorder = jp.Recorder(sink, losses)
            self.prepare(step, recorder)
            done += 1
            for chunk in chunks(n, self.spec.chunk_points):
                k = self.run_chunk(step, chunk, recorder, should_stop)
                done += k
                if progress is not None:
                    progress(done, total)
                if k < len(chunk):
                    return False
            if self.spec.directions.kind == "interpolation" and self.spec.kind == "slice":
                ends = recorder.named["endpoints"]
                sink.values(step, {"barrier": jp.interpolation_barrier(self.spec, losses, ends)})
            if progress is not None:
                progress(done, total)
            if hasattr(sink, "flush"):  # a file sink writes each finished step
                sink.flush()
        return True


def _check_other(spec: AnalysisSpec, other: SnapshotStore | None) -> None:
    d = spec.directions
    if d.kind == "interpolation" and d.source == "run" and other is None:
        raise ValueError("interpolation between runs needs the other run's snapshots")


def _require(want: list[int], have: list[int], where: str) -> None:
    missing = [s for s in want if s not in set(have)]
    if missing:
        shown = have if len(have) <= 20 else [*have[:10], "...", *have[-5:]]
        raise ValueError(f"no snapshot of step {', '.join(map(str, missing))} in {where}; "
                         f"saved steps: {shown or 'none'}")
