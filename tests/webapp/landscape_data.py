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
                  directions: str | None = None) -> dict[str, Any]:
    """An analysis's detail. `holes`: (iy, ix) -> raw JSON value put there (e.g. "nan",
    None); `values`: per step, the `values` object."""
    spec_in: dict[str, Any] = {"kind": kind, "steps": list(steps), "bn_mode": bn_mode}
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
            "cost": {}, "steps": out_steps}


def spectrum_values(top: list[float], trace: float, stderr: float, share: float = 0.5,
                    density: tuple[list[float], list[Any]] | None = None) -> dict[str, Any]:
    xs, ys = density or ([0.0, 1.0, 2.0, 3.0], [0.5, 0.0, 0.25, 1e-3])
    return {"spectrum": {"top_eigenvalues": top, "trace": trace, "trace_stderr": stderr,
                         "trace_probes": 50, "density": {"x": xs, "y": ys},
                         "gradient_share": share, "hvps": 100, "lanczos_residuals": []}}
