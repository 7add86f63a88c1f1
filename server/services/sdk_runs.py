"""SDK runs: runs trained by a user's own loop (landscope.init), not by a worker.

The server never sends these to a broker: the user's process trains and posts its metrics
(server/services/ingest.py), and its heartbeats keep the row `running`. When they stop for
settings.sdk_heartbeat_timeout_seconds the reconciler marks the run `crashed`; a heartbeat
that arrives later (the process was only cut off from the server) revives it. The process
ends the run itself (finish). `client_id`, the SDK's uuid, makes creation idempotent: a
retried init, or `landscope sync` of the same offline run, finds the same row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db.models import AdmissionLock, Experiment, Run, utcnow
from server.schemas_sdk import (
    MAX_CONFIG_BYTES,
    MAX_ENVIRONMENT_BYTES,
    SdkRunCreate,
    SdkRunFinish,
)
from server.services.errors import Conflict, InvalidRequest, NotFound
from server.text import text_problem

SDK_QUEUE = "sdk"  # no worker consumes it: only a label in lists and the dashboard
MAX_CONFIG_DEPTH = 32
ALIVE = ("running", "crashed")  # states a heartbeat or a finish may move on from


@dataclass(frozen=True)
class Heartbeat:
    step: int | None
    last_loss: float | None


def find_by_client_id(session: Session, client_id: str) -> Run | None:
    return session.scalar(select(Run).where(Run.client_id == client_id))


def create_sdk_run(session: Session, req: SdkRunCreate) -> tuple[Run, bool]:
    """(the run, True) once saved, not committed; (the run of this client_id, False) when
    it exists already (whatever else the request says: the id is the run's identity)."""
    if (run := find_by_client_id(session, req.client_id)) is not None:
        return run, False
    config = storable_config(req.config)
    environment = storable_environment(req.environment)
    # The admission lock's row serialises creators (server/db/models.py AdmissionLock): two
    # inits of one client_id, or of one new experiment name, cannot both create.
    session.execute(update(AdmissionLock).where(AdmissionLock.id == 1)
                    .values(admitted=AdmissionLock.admitted))
    if (run := find_by_client_id(session, req.client_id)) is not None:
        return run, False
    now = utcnow()
    run = Run(
        experiment_id=_experiment_id(session, req), name=req.name, spec={}, status="running",
        queue=SDK_QUEUE, total=req.total or 0, source="sdk", config=config,
        client_id=req.client_id, attempts=1, started_at=now, heartbeat_at=now,
        info=sdk_info(req, environment),
    )
    if (lost := _insert(session, run)) is None:
        return run, True
    if (prior := find_by_client_id(session, req.client_id)) is not None:
        return prior, False
    if not _experiment_deleted(session, run.experiment_id):
        raise lost
    # The experiment was deleted between our read and this write (on PostgreSQL the delete
    # held its row, so our foreign-key check waited for it and then failed). A join by id
    # names what no longer exists; a join by name starts the experiment anew, as an init
    # arriving just after the delete would.
    if req.experiment_id is not None:
        raise InvalidRequest(("body", "experiment_id"),
                             f"experiment {req.experiment_id} not found", "not_found")
    run.experiment_id = _experiment_id(session, req)
    if (lost := _insert(session, run)) is not None:
        raise lost
    return run, True


def _insert(session: Session, run: Run) -> IntegrityError | None:
    """Insert `run` under a savepoint; the IntegrityError if a constraint refused it (the
    unique client_id, the experiment's foreign key), the session still usable then.

    The run is added inside the savepoint: begin_nested() flushes what is pending before its
    SAVEPOINT, so a run added before it would fail outside the savepoint and take the whole
    transaction with it (every later read a PendingRollbackError: a 500)."""
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError as exc:
        if run in session:  # the savepoint's rollback normally took it out already
            session.expunge(run)
        return exc
    return None


def _experiment_deleted(session: Session, exp_id: int | None) -> bool:
    """Whether experiment exp_id is gone now (a fresh read, not the session's identity map)."""
    return exp_id is not None and session.scalar(
        select(Experiment.id).where(Experiment.id == exp_id)) is None


def sdk_info(req: SdkRunCreate, environment: dict[str, Any] | None) -> dict[str, Any] | None:
    """run.info of an SDK run: its x-axis (RunOut.x_axis) when the loop said either size,
    and the environment its process recorded at init (RunOut.environment)."""
    info: dict[str, Any] = {}
    if req.batch_size is not None or req.train_size is not None:
        info["x_axis"] = {"batch_size": req.batch_size, "train_size": req.train_size}
    if environment is not None:
        info["environment"] = environment
    return info or None


def _experiment_id(session: Session, req: SdkRunCreate) -> int | None:
    if req.experiment_id is not None:
        exp = session.get(Experiment, req.experiment_id)
        if exp is None:
            raise InvalidRequest(("body", "experiment_id"),
                                 f"experiment {req.experiment_id} not found", "not_found")
        if exp.source != "sdk":
            raise InvalidRequest(("body", "experiment_id"), f"experiment {exp.id} is a "
                                 "service experiment (its runs train from a spec on workers); "
                                 "SDK runs join SDK experiments", "wrong_source")
        return exp.id
    if req.experiment is None:
        return None
    found = session.scalar(select(Experiment.id).where(
        Experiment.name == req.experiment, Experiment.source == "sdk",
    ).order_by(Experiment.id.desc()).limit(1))
    if found is not None:
        return found
    exp = Experiment(name=req.experiment, preset=None, base_spec={}, vary={}, analyses=[],
                     source="sdk")
    session.add(exp)
    session.flush()
    return exp.id


def storable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as a JSON column stores it on both databases: non-finite numbers as the
    strings "NaN"/"Infinity"/"-Infinity" (PostgreSQL's json rejects the bare words), text
    without NUL or lone surrogates, at most MAX_CONFIG_DEPTH deep and MAX_CONFIG_BYTES long."""
    out = _storable(config, ("body", "config"), 0)
    size = len(json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_CONFIG_BYTES:
        raise InvalidRequest(("body", "config"), f"{size} bytes as JSON; at most "
                             f"{MAX_CONFIG_BYTES}", "too_long")
    return out


def storable_environment(env: dict[str, Any] | None) -> dict[str, Any] | None:
    """The SDK's environment dict (RunOut.environment), stored as the config is, at most
    MAX_ENVIRONMENT_BYTES."""
    if env is None:
        return None
    out = _storable(env, ("body", "environment"), 0)
    size = len(json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_ENVIRONMENT_BYTES:
        raise InvalidRequest(("body", "environment"), f"{size} bytes as JSON; at most "
                             f"{MAX_ENVIRONMENT_BYTES}", "too_long")
    return out


def _storable(value: Any, loc: tuple, depth: int) -> Any:
    if depth > MAX_CONFIG_DEPTH:
        raise InvalidRequest(loc, f"nested deeper than {MAX_CONFIG_DEPTH} levels", "too_deep")
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        if problem := text_problem(value):
            raise InvalidRequest(loc, problem, "string_unstorable")
        return value
    if isinstance(value, dict):
        for k in value:
            if problem := text_problem(k):
                raise InvalidRequest((*loc, k), f"key {problem}", "string_unstorable")
        return {k: _storable(v, (*loc, k), depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v, (*loc, i), depth + 1) for i, v in enumerate(value)]
    return value


def sdk_run(session: Session, run_id: int, *, lock: bool = False) -> Run:
    """The SDK run `run_id`; NotFound, or Conflict for a run workers train.

    `lock`: hold a key-share lock on PostgreSQL until commit, so that a delete waits for
    the batch being written (and the batch cannot land on a run deleted meanwhile), while
    other batches and heartbeats of the run go on. SQLite has no row locks: a write that
    changes nothing takes the database's write lock first, so a delete cannot commit between
    this read (and the series ids read next) and the batch's inserts."""
    stmt = select(Run).where(Run.id == run_id)
    if lock:
        stmt = stmt.with_for_update(read=True, key_share=True)
        if session.connection().dialect.name == "sqlite":
            session.execute(update(Run).where(Run.id == run_id).values(step=Run.step))
    run = session.scalar(stmt)
    if run is None:
        raise NotFound("run", run_id)
    if run.source != "sdk":
        raise Conflict(f"run {run_id} is trained by a worker from its spec; only SDK runs "
                       "(landscope.init) take metrics and finish from a client")
    return run


def beat(session: Session, run: Run, hb: Heartbeat) -> None:
    """A sign of life: heartbeat_at now, step and last loss moved forward (a batch resent
    from the spool after newer ones never moves them back); a crashed run runs again.
    A finished run keeps everything: its status is the loop's last word."""
    if run.status not in ALIVE:
        return
    values: dict[str, Any] = {
        "heartbeat_at": utcnow(), "status": "running",
        "finished_at": case((Run.status == "crashed", None), else_=Run.finished_at),
        "error": case((Run.status == "crashed", None), else_=Run.error),
    }
    if hb.step is not None:
        # The loop reports the last step it trained (0-based); runs.step counts steps done,
        # as a worker's run does, so that step / total reaches 1 at the end.
        done = hb.step + 1
        newer = Run.step <= done
        values["step"] = case((newer, done), else_=Run.step)
        if hb.last_loss is not None:
            values["last_loss"] = case((newer, hb.last_loss), else_=Run.last_loss)
    elif hb.last_loss is not None:
        values["last_loss"] = hb.last_loss
    session.execute(update(Run).where(Run.id == run.id, Run.status.in_(ALIVE)).values(**values))
    session.refresh(run)


def finish(session: Session, run_id: int, req: SdkRunFinish) -> Run:
    """Running or crashed -> the status the loop reports. The same status again is a no-op
    (a retried finish); another status once finished is a Conflict."""
    run = sdk_run(session, run_id)
    values: dict[str, Any] = {"status": req.status, "finished_at": utcnow(), "error": req.error}
    if req.step is not None:  # the last step trained: steps done is one more (see beat)
        values["step"] = case((Run.step < req.step + 1, req.step + 1), else_=Run.step)
    hit = session.execute(
        update(Run).where(Run.id == run_id, Run.status.in_(ALIVE)).values(**values)
    ).rowcount
    session.refresh(run)
    if not hit and run.status != req.status:
        raise Conflict(f"run {run_id} has already finished ({run.status}); it cannot become "
                       f"{req.status}")
    return run


def mark_crashed(session: Session, timeout_seconds: float) -> list[int]:
    """SDK runs silent for `timeout_seconds` become crashed. Never requeued, never sent:
    no worker can train them; only their own process can bring them back."""
    cutoff = utcnow() - timedelta(seconds=timeout_seconds)
    silent = (Run.source == "sdk", Run.status == "running", Run.heartbeat_at < cutoff)
    ids = list(session.scalars(select(Run.id).where(*silent)))
    if ids:
        # Conditional on the same test: a heartbeat landing meanwhile keeps its run running.
        session.execute(update(Run).where(Run.id.in_(ids), *silent).values(
            status="crashed", finished_at=utcnow(),
            error=f"no heartbeat from the training process for {timeout_seconds:g} s"))
    return ids
