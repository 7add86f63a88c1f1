"""Rows to response bodies, with the figures derived for clients: progress, ETA, probe cost."""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import datetime
from typing import Any

from server.analysis_spec import AnalysisSpec
from server.db.models import Experiment, Run, WorkerRecord, utcnow
from server.presets import Preset
from server.queue import CONSUMERS
from server.schemas import ExperimentDetail, ExperimentOut, PresetOut, RunOut, WorkerOut, json_float
from server.spec import SpecError, build_spec


def eta_seconds(run: Run, now: datetime) -> float | None:
    """Seconds left at the step rate since the run started; None unless running with steps
    done (a rate from zero steps says nothing)."""
    if run.status != "running" or run.started_at is None or run.step <= 0 or run.total <= 0:
        return None  # (an sdk run that gave no total: no end to count down to)
    elapsed = (now - run.started_at).total_seconds()
    if elapsed <= 0:
        return None
    return max(0.0, (run.total - run.step) * elapsed / run.step)


def last_loss(run: Run) -> float | str | None:
    # The column reads NULL back as NaN (models.Real), so "no loss yet" and "the loss was NaN"
    # look alike; before any step or divergence it can only mean the former.
    loss = run.last_loss
    if loss is None or (math.isnan(loss) and run.step == 0 and run.diverged_at is None):
        return None
    return json_float(loss)


def probe_cost(spec: dict) -> dict[str, float] | None:
    if not spec:  # an sdk run: no RunSpec (an empty dict would validate as the defaults)
        return None
    try:
        return build_spec(spec).probe_cost()
    except SpecError:  # a spec stored by an older version that no longer validates
        return None


def waiting_for(run: Run, served: Collection[str] | None) -> str | None:
    """Who a queued run waits for when no online worker consumes its queue (`served`: the
    queues online workers consume; None: unknown, so nothing is claimed)."""
    if served is None or run.status != "queued" or run.queue in served:
        return None
    return CONSUMERS.get(run.queue, f"a worker consuming {run.queue}")


def run_out(run: Run, now: datetime | None = None,
            served: Collection[str] | None = None) -> RunOut:
    return RunOut(
        id=run.id,
        experiment_id=run.experiment_id,
        name=run.name,
        source=run.source,
        config=run.config,
        spec=run.spec,
        status=run.status,
        queue=run.queue,
        step=run.step,
        total=run.total,
        progress=min(1.0, run.step / run.total) if run.total > 0 else 0.0,
        eta_seconds=eta_seconds(run, now or utcnow()),
        last_loss=last_loss(run),
        diverged_at=run.diverged_at,
        worker=run.worker,
        device=run.device,
        error=run.error,
        attempts=run.attempts,
        cancel_requested=run.cancel_requested,
        probe_cost=probe_cost(run.spec),
        created_at=run.created_at,
        enqueued_at=run.enqueued_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        heartbeat_at=run.heartbeat_at,
        waiting_for=waiting_for(run, served),
        tags=run.tags,
        note=run.note,
        layers=recorded_layers(run),
        environment=recorded_environment(run),
        x_axis=x_axis(run),
    )


def recorded_environment(run: Run) -> dict[str, Any] | None:
    """run.info["environment"] (worker/engine/environment.py), when it is a dict."""
    env = run.info.get("environment") if isinstance(run.info, dict) else None
    return env if isinstance(env, dict) else None


def recorded_layers(run: Run) -> int | None:
    """run.info["size"]["n_layers"] (worker/engine/model_size.py), when it is an int."""
    size = run.info.get("size") if isinstance(run.info, dict) else None
    n = size.get("n_layers") if isinstance(size, dict) else None
    return n if type(n) is int and 0 <= n <= 2**31 - 1 else None


def x_axis(run: Run) -> dict | None:
    """run.info["x_axis"] ({batch_size, train_size}: RunOut.x_axis), when it is a dict."""
    info = run.info if isinstance(run.info, dict) else {}
    value = info.get("x_axis")
    return value if isinstance(value, dict) else None


def experiment_out(exp: Experiment, counts: dict[str, int]) -> ExperimentOut:
    return ExperimentOut(
        id=exp.id,
        name=exp.name,
        source=exp.source,
        preset=exp.preset,
        base_spec=exp.base_spec,
        vary=exp.vary,
        analyses=exp.analyses or [],
        created_at=exp.created_at,
        status_counts=counts,
        tags=exp.tags,
        note=exp.note,
    )


def experiment_detail(exp: Experiment, served: Collection[str] | None = None) -> ExperimentDetail:
    counts: dict[str, int] = {}
    for run in exp.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    now = utcnow()
    return ExperimentDetail(
        **experiment_out(exp, counts).model_dump(),
        runs=[run_out(r, now, served) for r in exp.runs],
    )


def preset_out(p: Preset) -> PresetOut:
    return PresetOut(
        name=p.name,
        figures=p.figures,
        description=p.description,
        base=p.base,
        vary=p.vary,
        analyses=[AnalysisSpec.model_validate(a).model_dump(mode="json") for a in p.analyses],
        runs=math.prod(len(v) for v in p.vary.values()),
    )


def worker_out(w: WorkerRecord, online: bool) -> WorkerOut:
    return WorkerOut(
        name=w.name,
        hostname=w.hostname,
        pid=w.pid,
        device=w.device,
        queues=w.queues,
        info=w.info,
        current_run_id=w.current_run_id,
        started_at=w.started_at,
        last_seen=w.last_seen,
        online=online,
    )
