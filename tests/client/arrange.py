"""Runs, metrics, probe records, histograms and analyses arranged as the service leaves them:
run rows as the API saves them, measurements written by the worker's own sinks (SqlSink,
SqlAnalysisSink), analyses created through POST /analyses. The notebook client's tests read
them back through a real uvicorn server."""

from __future__ import annotations

import math
from typing import Any

import httpx
from sqlalchemy import Engine, update

from server.db.models import Analysis, Experiment, Run, Snapshot, utcnow
from server.db.session import make_sessionmaker
from server.spec import build_spec
from worker.analysis_sink import SqlAnalysisSink
from worker.engine.geometry.sink import GridValue
from worker.engine.sink import Distribution, EtaRecord
from worker.sql_sink import SqlSink

RUN = {"model": "mlp", "depth": 3, "width": 16, "dataset": "mnist1d", "steps": 40,
       "batch_size": 32, "snapshots": {"every": 10}, "device": "cpu", "lr": 0.25}
BAD = {7: math.nan, 8: math.inf, 9: -math.inf}  # train/loss at these steps is not finite
MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)


def experiment(engine: Engine, name: str) -> int:
    with make_sessionmaker(engine).begin() as s:
        e = Experiment(name=name, base_spec={}, vary={})
        s.add(e)
        s.flush()
        return e.id


def run(engine: Engine, *, experiment_id: int | None = None, status: str = "succeeded",
        name: str = "r", **spec: Any) -> int:
    full = build_spec({**RUN, **spec}).model_dump(mode="json")
    with make_sessionmaker(engine).begin() as s:
        r = Run(name=name, spec=full, queue="landscope.cpu", total=full["steps"],
                step=full["steps"], status=status, experiment_id=experiment_id,
                # a live worker beats; else the reconciler would requeue a running run
                heartbeat_at=utcnow() if status == "running" else None)
        s.add(r)
        s.flush()
        s.add_all(Snapshot(run_id=r.id, step=k, path=f"/snap/{r.id}/{k}.pt", bytes=100)
                  for k in (0, 10, 20, 30, 40))
        return r.id


def loss(step: int) -> float:
    return BAD.get(step, 2.0 / (1 + step))


def measurements(engine: Engine, run_id: int, *, steps: int = 3000) -> None:
    """train/loss at every step (three non-finite), test/acc every 100, keys that need
    escaping, probe records every 10 steps (one NaN), histograms every 10 steps."""
    sink = SqlSink(engine, run_id, flush_seconds=60, flush_points=10**9)
    try:
        for step in range(steps):
            values = {"train/loss": loss(step)}
            if step % 100 == 0:
                values["test/acc"] = step / steps
            if step < 10:
                values["weird[a]*?"] = float(step)
            if step < 5:
                values["a,b"] = -float(step)
            sink.scalars(step, values)
        for step in range(0, 100, 10):
            sink.eta_records(step, "landscape", [
                EtaRecord(multiplier=m, eta=0.25 * m,
                          loss=math.nan if (step, m) == (30, 4.0) else step + m,
                          grad_dist=m / (1 + step)) for m in MULTIPLIERS])
            sink.distributions(step, [
                Distribution(layer=layer, scope=scope, unit=0 if scope == "unit" else None,
                             lo=-4.0, hi=4.0, counts=[step, 1, 2, layer], underflow=1,
                             overflow=0, nonfinite=1 if step == 20 else 0, mean=0.5 * layer,
                             var=math.inf if step == 20 else 1.0,
                             quantiles={"q50": 0.1 * step, "q99": math.nan})
                for layer in (1, 2) for scope in ("layer", "unit")])
    finally:
        sink.close()


def sparse(engine: Engine, run_id: int) -> None:
    sink = SqlSink(engine, run_id, flush_seconds=60, flush_points=10**9)
    for step in (0, 5_000_000, 10_000_000):
        sink.scalars(step, {"train/loss": float(step)})
    sink.close()


def surface(engine: Engine, api: str, run_id: int) -> int:
    """A 3 x 2 surface at step 40 through the API; five of its six points stored (one NaN,
    one +inf), a spectrum value with a NaN trace and an environment record; marked succeeded
    as its worker would."""
    spec = {"kind": "surface", "steps": [40], "x": {"lo": -1, "hi": 1, "points": 3},
            "y": {"lo": 0, "hi": 1, "points": 2}}
    resp = httpx.post(f"{api}/api/v1/analyses", json={"run_id": run_id, "spec": spec})
    resp.raise_for_status()
    (a,) = resp.json()["analyses"]
    sink = SqlAnalysisSink(engine, a["id"])
    sink.points(40, [GridValue(0, 1.5, 0.25), GridValue(1, math.nan, 0.5),
                     GridValue(2, math.inf, 0.0), GridValue(3, 0.125, 1.0),
                     GridValue(5, 3.0, 0.75)])  # index 4 (ix 1, iy 1) never measured
    sink.values(40, {"spectrum": {"top_eigenvalues": [3.5, 1.0], "trace": math.nan},
                     # as a worker records the environment it computed in (job_numerics.py)
                     "environment:0123456789ab": {"torch_threads": 2, "deterministic": True}})
    with engine.begin() as conn:
        conn.execute(update(Analysis).where(Analysis.id == a["id"]).values(status="succeeded"))
    return a["id"]
