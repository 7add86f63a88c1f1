"""The analyses half of scripts/reproduce_figures.py `run`: a plan's analyses of one run,
in-process, written as RUN_DIR/analyses.json and read back as the API gives them.

A worker runs an experiment's analyses on each run once it succeeds (server/services/
auto_analyses.py); here the same engine code runs them (worker/engine/geometry/job.py
AnalysisJob, as scripts/_geometry_measure.py does) on the snapshots the run was trained with.
analyses.json is a list of dicts shaped like GET /analyses/{id} (AnalysisDetail): kind,
bn_mode, spec (steps resolved: null becomes the run's last step, as the server stores it),
status, error, and steps {str(step): {x, y, loss, acc, test_loss, test_acc, values}} with the
grids laid out as server/services/analysis_views.py lays them out (ny rows of nx; acc only for
a classification, test_* only when the spec asks for the test set). Non-finite numbers are
written as the API writes them, the strings "NaN", "Infinity", "-Infinity" (strict JSON), so
`load_analyses` hands the file to R.analysis_data_from_api unchanged, exactly like the CLI
hands it the API's answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from server import reproduction as R
from server.analysis_spec import AnalysisSpec
from server.schemas import json_float
from server.spec import RunSpec
from worker.analysis_sink import json_safe  # as the worker stores values

FILE = "analyses.json"


def resolved(run: RunSpec, entries: Sequence[Mapping[str, Any]]) -> list[AnalysisSpec]:
    """The plan's analyses of a run of `run`, steps resolved (null: the last step, always
    saved); SystemExit naming the step when one is not in the run's snapshot schedule (what
    the server answers with a 422 when the experiment is posted)."""
    out = []
    for i, entry in enumerate(entries):
        spec = AnalysisSpec.model_validate(entry)
        steps = spec.steps if spec.steps is not None else [run.steps]
        off = [s for s in steps if s > run.steps or not run.snapshots.due(s, run.steps)]
        if off:
            raise SystemExit(f"{run.name_hint()}: analysis {i} ({spec.kind}) wants step(s) "
                             f"{off}, which the run does not snapshot (snapshots.every "
                             f"{run.snapshots.every}, steps {run.snapshots.steps}, and 0 and "
                             f"{run.steps})")
        if spec.directions.kind == "interpolation" and spec.directions.source == "run":
            raise SystemExit(f"{run.name_hint()}: analysis {i} interpolates towards another "
                             "run, which an experiment's analyses cannot")
        out.append(spec.model_copy(update={"steps": steps}))
    return out


def detail(spec: AnalysisSpec, grid: Mapping[int, Mapping[int, Any]],
           named: Mapping[int, Mapping[str, Any]], status: str = "succeeded",
           error: str | None = None) -> dict[str, Any]:
    """An AnalysisDetail-like dict from a MemoryAnalysisSink's `grid` (step -> index ->
    GridValue) and `named` (step -> name -> value), laid out as analysis_views.py does."""
    ny, nx = spec.grid_shape()
    xs = spec.x_axis().values() if nx else None
    y_axis = spec.y_axis()
    ys = y_axis.values() if y_axis is not None and nx else None
    measured_acc = any(v.acc is not None for rows in grid.values() for v in rows.values())

    def layout(rows: Mapping[int, Any], column: str) -> list[list[Any]]:
        out: list[list[Any]] = [[None] * nx for _ in range(ny)]
        for idx, v in rows.items():
            value = getattr(v, column)
            if 0 <= idx < ny * nx:
                out[idx // nx][idx % nx] = None if value is None else json_float(float(value))
        return out

    steps = {}
    for step in sorted(set(spec.steps or []) | set(named)):
        rows = grid.get(step, {})
        gridded = nx > 0 and step in (spec.steps or [])
        steps[str(step)] = {
            "x": xs, "y": ys,
            "loss": layout(rows, "loss") if gridded else None,
            "acc": layout(rows, "acc") if gridded and measured_acc else None,
            "test_loss": layout(rows, "test_loss") if gridded and spec.test_set else None,
            "test_acc": (layout(rows, "test_acc")
                         if gridded and spec.test_set and measured_acc else None),
            "values": json_safe(dict(named.get(step, {}))),
        }
    return {"kind": spec.kind, "bn_mode": spec.bn_mode, "spec": spec.model_dump(mode="json"),
            "status": status, "error": error, "steps": steps}


def run_analyses(run: RunSpec, specs: Sequence[AnalysisSpec], store: Any, data_dir: Path,
                 threads: int) -> list[dict[str, Any]]:
    """Each analysis of the trained run, in order, in this process: one that raises is kept
    `failed` with its error (as a worker saves it), so a claim reading it gets MissingData."""
    from worker.engine.geometry.job import AnalysisJob
    from worker.engine.geometry.sink import MemoryAnalysisSink
    from worker.engine.threads import torch_threads

    out = []
    for spec in specs:
        sink = MemoryAnalysisSink()
        try:
            with torch_threads(threads):
                AnalysisJob(run, spec, data_dir, store, "cpu", threads=threads).run_all(sink)
        except Exception as exc:  # noqa: BLE001 - recorded, as a worker records it
            out.append(detail(spec, {}, {}, "failed", f"{type(exc).__name__}: {exc}"))
            continue
        out.append(detail(spec, sink.grid, sink.named))
    return out


def write(run_dir: Path, analyses: Sequence[Mapping[str, Any]]) -> None:
    # allow_nan=False: a non-finite float that escaped `safe` fails here, not in a reader.
    (run_dir / FILE).write_text(json.dumps(list(analyses), allow_nan=False) + "\n")


def up_to_date(run_dir: Path, analyses_json: str) -> bool:
    """Whether the run directory holds a finished run with the planned analyses (a run that
    did not succeed has none to hold): else `run` trains it again (snapshots are not kept)."""
    record = run_dir / "run.json"
    if not record.exists():
        return False
    wanted = json.loads(analyses_json)
    if not wanted or json.loads(record.read_text())["status"] != "succeeded":
        return True
    path = run_dir / FILE
    return path.exists() and [d["spec"] for d in json.loads(path.read_text())] == wanted


def load_analyses(run_dir: Path) -> list[R.AnalysisData]:
    """The succeeded analyses of analyses.json (none when the file is absent: a plan without
    analyses, or a run that did not succeed), as the CLI reads the API's."""
    path = run_dir / FILE
    if not path.exists():
        return []
    return [R.analysis_data_from_api(d) for d in json.loads(path.read_text())
            if d.get("status", "succeeded") == "succeeded"]
