"""landscope.analyse: the engine's geometry (surfaces, slices, trajectories, spectra) on a
user's own network, in-process, uploaded to the run's server when the run is online.

    result = landscope.analyse(model, loss_fn, (x_eval, y_eval), kind="surface", run=run,
                               step=step, x={"points": 21}, bn_mode="batch")
    result.loss          # (ny, nx) numpy array; result.x, result.y the axes' coordinates

The fields are those of an analysis spec (server/analysis_spec.py, validated by it: a bad one
is a ValueError naming the field) but `steps`: an in-process analysis measures the model as it
is now, recorded at `step`. The work is worker/engine/geometry's AnalysisJob, built from the
model instead of a run spec (AnalysisJob.from_model), so values mean what a worker's mean:
- the evaluation set is `data`'s eval_samples subset (all of it by default), the loss at a
  point the mean of `loss_fn` over it (`loss_fn` returns a batch mean, torch's default
  reduction; the engine's names "cross_entropy" / "sum_squares", F.cross_entropy and a plain
  nn.CrossEntropyLoss() take the engine's own fast path);
- BatchNorm per `bn_mode`, on a private copy: the model, its buffers and every random
  generator are left as they were; Dropout modules are off at every point (functional
  dropout that follows `self.training` stays on in bn_mode "batch", a train-mode pass: it
  draws from the global RNG, seeded from eval_seed for the analysis, so results repeat);
- directions "pca" (and kind "trajectory") need the path: `snapshots={step: state_dict}` of
  earlier steps; "interpolation" from init needs snapshots[0], between runs `other=` (the
  other network or its state_dict).

Online (run.api set), the result is stored on the server (POST /runs/{id}/analyses/upload,
with an Idempotency-Key, so a retried upload stores it once) and shows in the run's
Landscape tab; if the server cannot be reached, a warning says so and `result.upload(run)`
tries again. Offline (`landscope.init(dir=...)`), the upload body is written under
<dir>/analyses/ for `landscope sync` to send.
"""

from __future__ import annotations

import copy
import json
import math
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from server.analysis_spec import AnalysisSpec
from worker.engine.geometry.evaluate import LossSum
from worker.engine.geometry.job import AnalysisJob
from worker.engine.geometry.sink import MemoryAnalysisSink
from worker.engine.introspect import preserved_rng
from worker.engine.losses import LOSSES
from worker.engine.state import derive_seed

UPLOAD_TRIES = 4  # ~3.5 s of retries before giving the result back un-uploaded


@dataclass
class AnalysisResult:
    """What one analysis measured at one step: grids (ny rows of nx; None where not measured)
    and the named values (meta, directions, spectrum, trajectory, endpoints, barrier)."""

    spec: AnalysisSpec
    step: int
    x: list[float] | None
    y: list[float] | None
    loss: np.ndarray | None
    acc: np.ndarray | None
    test_loss: np.ndarray | None
    test_acc: np.ndarray | None
    values: dict[str, Any]
    analysis_id: int | None = None
    upload_error: str | None = None
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # the upload's Idempotency-Key

    def upload_body(self) -> dict[str, Any]:
        """The body of POST /runs/{id}/analyses/upload (non-finite floats as strings)."""
        part: dict[str, Any] = {"idx": [], "loss": [], "values": _jsonable(self.values)}
        if self.loss is not None:
            flat = self.loss.reshape(-1)
            part["idx"] = list(range(flat.size))
            part["loss"] = [_json_float(v) for v in flat.tolist()]
            for name in ("acc", "test_loss", "test_acc"):
                grid = getattr(self, name)
                if grid is not None:
                    part[name] = [None if v is None else _json_float(v)
                                  for v in grid.reshape(-1).tolist()]
        return {"spec": self.spec.model_dump(mode="json"), "steps": {str(self.step): part}}

    def upload(self, run: Any) -> int | None:
        """Store this result on `run`'s server (again: the same Idempotency-Key stores it
        once). Returns the analysis id; None (and `upload_error`) if it could not."""
        api = getattr(run, "api", None)
        if api is None or getattr(run, "id", None) is None:
            raise ValueError("this run has no server: upload needs an online run")
        from landscope.sdk.api import ServerUnreachable

        body = self.upload_body()
        for attempt in range(UPLOAD_TRIES):
            try:
                out = api.request("POST", f"/runs/{run.id}/analyses/upload", json=body,
                                  headers={"Idempotency-Key": self.key})
            except ServerUnreachable as exc:
                self.upload_error = str(exc)
                if attempt + 1 < UPLOAD_TRIES:
                    time.sleep(0.5 * 2**attempt)
                continue
            self.analysis_id, self.upload_error = int(out["id"]), None
            return self.analysis_id
        warnings.warn(f"analysis not uploaded ({self.upload_error}); the result is kept: "
                      "call result.upload(run) to try again", RuntimeWarning, stacklevel=2)
        return None


def analyse(model: nn.Module, loss_fn: str | Callable[[Tensor, Tensor], Tensor],
            data: tuple[Tensor, Tensor], kind: str = "surface", run: Any = None,
            step: int | None = None, *, test: tuple[Tensor, Tensor] | None = None,
            snapshots: Mapping[int, Mapping[str, Tensor]] | None = None,
            other: nn.Module | Mapping[str, Tensor] | None = None,
            device: str | torch.device | None = None, deterministic: bool = False,
            **fields: Any) -> AnalysisResult:
    """Measure `model` as it is now (see the module docstring); `fields` as in an analysis
    spec (x, y, directions, bn_mode, eval_samples, batch_size, test_set, spectrum, ...).
    `deterministic`: deterministic kernels for the analysis's work (on a GPU, the same
    numbers call after call), your process's switches put back afterwards. The environment
    it ran in is in result.values["environment:<digest>"]."""
    if "steps" in fields:
        raise TypeError("analyse measures the model as it is now: give step=, not steps=")
    step = _step(run, step)
    spec = AnalysisSpec.model_validate({**fields, "kind": kind, "steps": [step]})
    x, y = _pair(data, "data")
    test_pair = _pair(test, "test") if test is not None else None
    loss, classify = _loss(loss_fn, model, x, y)
    store = MemorySnapshots({s: dict(sd) for s, sd in (snapshots or {}).items()})
    store.put(step, model.state_dict())
    other_store = None
    if other is not None:
        state = other.state_dict() if isinstance(other, nn.Module) else other
        other_store = MemorySnapshots({step: dict(state)})
    sink = MemoryAnalysisSink()
    with preserved_rng(model):
        # Dropout written as F.dropout(x, p, self.training) cannot be switched off from
        # outside: it draws from the global RNG, seeded here so that the result is the same
        # whatever the user's RNG state (which is put back afterwards).
        torch.manual_seed(derive_seed(spec.eval_seed, "sdk-analysis-global-rng"))
        # The job's network: a copy with the model's architecture (weights come from the store)
        net = copy.deepcopy(model)
        job = AnalysisJob.from_model(net, loss, (x, y), spec, store, classify=classify,
                                     test=test_pair, device=device, other_snapshots=other_store,
                                     norm=_norm_names(model), deterministic=deterministic)
        job.run_all(sink)
    result = _result(spec, step, sink)
    if run is not None:
        _deliver(result, run)
    return result


class MemorySnapshots:
    """A SnapshotStore (worker/engine/snapshots.py) of state_dicts held in memory, copied in."""

    def __init__(self, states: Mapping[int, Mapping[str, Tensor]] | None = None) -> None:
        self._states: dict[int, dict[str, Tensor]] = {}
        for s, sd in (states or {}).items():
            self.put(s, sd)

    def put(self, step: int, state: Mapping[str, Tensor]) -> None:
        self._states[int(step)] = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def save(self, step: int, state: dict[str, Any]) -> None:
        self.put(step, state["model"])

    def steps(self) -> list[int]:
        return sorted(self._states)

    def load(self, step: int) -> dict[str, Any]:
        if step not in self._states:
            raise FileNotFoundError(f"no snapshot of step {step}; have {self.steps() or 'none'}")
        return {"step": step, "model": self._states[step]}


def _step(run: Any, step: int | None) -> int:
    if step is None:  # the run's last logged step, else 0
        step = getattr(run, "last_step", None) or 0
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return int(step)


def _pair(data: Any, name: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(data, tuple | list) and len(data) == 2
            and all(isinstance(t, Tensor) for t in data)):
        raise TypeError(f"{name} must be a pair of tensors (inputs, targets)")
    x, y = data
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{name}: {len(x)} inputs and {len(y)} targets; need as many, > 0")
    return x, y


def _loss(loss_fn: Any, model: nn.Module, x: Tensor, y: Tensor) -> tuple[str | LossSum, bool]:
    """(what the evaluator takes, whether accuracy is measured)."""
    classify = not torch.is_floating_point(y) and y.dim() == 1
    if isinstance(loss_fn, str):
        if loss_fn not in LOSSES:
            raise ValueError(f"unknown loss {loss_fn!r}; give one of {sorted(LOSSES)} or a "
                             "function (outputs, targets) -> mean loss")
        return loss_fn, classify
    if not callable(loss_fn):
        raise TypeError("loss_fn must be a loss name or a function (outputs, targets) -> loss")
    for name, fn in LOSSES.items():
        if loss_fn is fn:
            return name, classify
    if classify and _plain_cross_entropy(loss_fn):
        return "cross_entropy", True
    out_dim = _output_dim(model, x)
    return _batch_mean_loss(loss_fn, out_dim), classify


def _plain_cross_entropy(fn: Any) -> bool:
    if fn is nn.functional.cross_entropy:
        return True
    return (type(fn) is nn.CrossEntropyLoss and fn.reduction == "mean" and fn.weight is None
            and fn.ignore_index == -100 and fn.label_smoothing == 0.0)


def _output_dim(model: nn.Module, x: Tensor) -> int:
    """The dimension of the model's output for a batch (one forward of one sample, nothing
    of the model or of any random generator changed)."""
    probe = copy.deepcopy(model).eval()
    device = next(model.parameters()).device
    with preserved_rng(model), torch.no_grad():
        return probe(x[:1].to(device)).dim()


def _batch_mean_loss(loss_fn: Callable[[Tensor, Tensor], Tensor], out_dim: int) -> LossSum:
    """A user's batch-mean loss as the evaluator's LossSum: (sum over samples in float64,
    hits or None), for outputs with leading point dimensions (the evaluator's vmap groups)."""

    def loss_sum(out: Tensor, y: Tensor, classify: bool) -> tuple[Tensor, Tensor | None]:
        lead = out.shape[: out.dim() - out_dim]
        rows = out.reshape(-1, *out.shape[len(lead):])
        sums = torch.stack([loss_fn(o, y).double() * len(y) for o in rows]).reshape(lead)
        hits = None
        if classify:
            hits = (out.argmax(dim=-1) == y).sum(dim=-1)
        return sums, hits

    return loss_sum


def _norm_names(model: nn.Module) -> str | None:
    """The normalisation layer types of a user's model, for the meta ("BatchNorm2d", ...)."""
    names = sorted({type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__})
    return ",".join(names) if names else "none"


def _result(spec: AnalysisSpec, step: int, sink: MemoryAnalysisSink) -> AnalysisResult:
    ny, nx = spec.grid_shape()
    values = sink.named.get(step, {})
    grids: dict[str, np.ndarray | None] = {"loss": None, "acc": None, "test_loss": None,
                                           "test_acc": None}
    if nx:
        rows = sink.grid.get(step, {})
        for name in grids:
            flat = [getattr(rows[i], name) if i in rows else None for i in range(ny * nx)]
            if all(v is None for v in flat):
                continue
            grids[name] = np.array([math.nan if v is None else v for v in flat],
                                   dtype=np.float64).reshape(ny, nx)
    y_axis = spec.y_axis()
    return AnalysisResult(
        spec=spec, step=step, x=spec.x_axis().values() if nx else None,
        y=y_axis.values() if y_axis is not None and nx else None, values=dict(values),
        **grids)


def _deliver(result: AnalysisResult, run: Any) -> None:
    if getattr(run, "api", None) is not None and getattr(run, "id", None) is not None:
        result.upload(run)
        return
    run_dir = getattr(run, "dir", None)
    if run_dir is not None:  # offline: `landscope sync` uploads it with the run
        folder = Path(run_dir) / "analyses"
        folder.mkdir(parents=True, exist_ok=True)
        doc = {"idempotency_key": result.key, "body": result.upload_body()}
        tmp = folder / f"analysis-{result.key}.json.tmp"
        tmp.write_text(json.dumps(doc, allow_nan=False), encoding="utf-8")
        tmp.replace(folder / f"analysis-{result.key}.json")


def _json_float(v: float) -> float | str:
    if math.isfinite(v):
        return v
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return _json_float(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic | Tensor):
        return _jsonable(obj.item())
    return obj
