"""Analysis JSON shaped as GET /api/v1/analyses/{id} returns it (the issue 12 contract), from
closed forms, for the landscape figure and tab tests: a quadratic bowl per run, with
non-finite values as the API's strings ("nan", "inf", "-inf") and missing points as null."""

from __future__ import annotations

import math
from typing import Any

from server.analysis_spec import AnalysisSpec


def encode(v: float | None) -> Any:
    """A float as the API writes it in JSON."""
    if v is None:
        return None
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def bowl(a: float, b: float, scale: float, step: int) -> float:
    """A made-up landscape: sharper with `scale`, lower later in training."""
    return 0.1 + 1.0 / (1 + step / 100) + scale * (a * a + 0.5 * b * b)


def analysis_json(aid: int, run_id: int, *, kind: str = "surface", bn_mode: str = "batch",
                  steps: tuple[int, ...] = (100,), scale: float = 1.0, points: int = 5,
                  holes: dict[tuple[int, int], Any] | None = None,
                  values: dict[int, dict[str, Any]] | None = None,
                  status: str = "succeeded", group_id: int = 1, experiment_id: int = 1,
                  directions: str | None = None, eval_samples: int | None = 2048,
                  cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """An analysis's detail. `holes`: (iy, ix) -> raw JSON value put there (e.g. "nan",
    None); `values`: per step, the `values` object; `cost` as the server stored it."""
    spec_in: dict[str, Any] = {"kind": kind, "steps": list(steps), "bn_mode": bn_mode,
                               "eval_samples": eval_samples}
    if kind != "spectrum":
        spec_in["x"] = {"lo": -1, "hi": 1, "points": points}
        if kind in ("surface", "trajectory"):
            spec_in["y"] = {"lo": -1, "hi": 1, "points": points}
    if directions:
        spec_in["directions"] = {"kind": directions}
    elif kind == "trajectory":
        spec_in["directions"] = {"kind": "pca"}
    spec = AnalysisSpec.model_validate(spec_in)
    out_steps: dict[str, Any] = {}
    for s in steps:
        entry: dict[str, Any] = {"values": (values or {}).get(s, {})}
        if kind == "spectrum":
            entry.update(x=[], y=None, loss=[])
        else:
            xs = spec.x_axis().values()
            y_axis = spec.y_axis()
            ys = y_axis.values() if y_axis else None
            rows = []
            for iy, b in enumerate(ys or [0.0]):
                rows.append([encode(bowl(a, b, scale, s)) for a in xs])
                for ix in range(len(xs)):
                    if holes and (iy, ix) in holes:
                        rows[iy][ix] = holes[(iy, ix)]
            entry.update(x=xs, y=ys, loss=rows, acc=None, test_loss=None, test_acc=None)
        out_steps[str(s)] = entry
    total = spec.grid_points() * len(steps)
    return {"id": aid, "run_id": run_id, "experiment_id": experiment_id, "group_id": group_id,
            "kind": kind, "bn_mode": bn_mode, "spec": spec.model_dump(mode="json"),
            "status": status, "progress": {"done": total, "total": total}, "error": None,
            "cost": cost or {}, "steps": out_steps}


def spectrum_values(top: list[float], trace: float, stderr: float, share: float = 0.5,
                    density: tuple[list[float], list[Any]] | None = None) -> dict[str, Any]:
    xs, ys = density or ([0.0, 1.0, 2.0, 3.0], [0.5, 0.0, 0.25, 1e-3])
    return {"spectrum": {"top_eigenvalues": top, "trace": trace, "trace_stderr": stderr,
                         "trace_probes": 50, "density": {"x": xs, "y": ys},
                         "gradient_share": share, "hvps": 100, "lanczos_residuals": []}}


def snapshotted_experiment(engine: Any) -> tuple[int, list[int]]:
    """Two finished runs (none, batch) of 30 steps with snapshots indexed at 0, 10, 20, 30,
    written into the API's database: what a dry run and a launch need (no worker)."""
    from sqlalchemy import insert

    from server.db.models import Snapshot
    from tests.support.synthetic import create_experiment

    exp, ids = create_experiment(engine, ["none", "batch"], steps=30,
                                 spec_changes={"snapshots": {"every": 10}})
    with engine.begin() as conn:
        conn.execute(insert(Snapshot), [
            {"run_id": rid, "step": s, "path": f"run-{rid}/snap-{s:08d}.pt", "bytes": 1}
            for rid in ids for s in (0, 10, 20, 30)])
    return exp, ids


def store_results(engine: Any, analysis: dict[str, Any], scale: float,
                  nan_at: int | None = None) -> None:
    """What the worker writes for a surface (through its own SQL sink): the loss (NaN at flat
    index `nan_at`) and the accuracy at every point of every step, then succeeded."""
    from sqlalchemy import update

    from server.db.models import Analysis
    from worker.analysis_sink import SqlAnalysisSink
    from worker.engine.geometry.sink import GridValue

    spec = AnalysisSpec.model_validate(analysis["spec"])
    xs, ys = spec.x_axis().values(), spec.y_axis().values()
    sink = SqlAnalysisSink(engine, analysis["id"])
    for step in spec.steps:
        losses = [float("nan") if iy * len(xs) + ix == nan_at else bowl(a, b, scale, step)
                  for iy, b in enumerate(ys) for ix, a in enumerate(xs)]
        sink.points(step, [GridValue(i, loss, acc=1 / (1 + loss))
                           for i, loss in enumerate(losses)])
    with engine.begin() as conn:
        conn.execute(update(Analysis).where(Analysis.id == analysis["id"])
                     .values(status="succeeded"))
