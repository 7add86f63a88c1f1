"""Plug-in models and datasets as the server sees them: names that online workers report.

The server never loads a plug-in (it never imports torch, let alone a user's code): a worker
lists the entry points it has in its heartbeat info (worker/engine/plugins.py: installed()),
and a spec naming a plug-in is accepted only when an online worker that consumes the run's
queue reports that name. Otherwise the run would wait in a queue that no worker able to run it
reads, or fail on a worker without it; the 422 names what is available instead.

A worker that goes offline after the run was accepted leaves it queued like any other run; a
worker of the same queue without the plug-in that takes the run fails it with a message that
says so (deployments give every worker of a queue the same plug-ins).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.models import WorkerRecord
from server.queue import queue_for
from server.services.errors import InvalidRequest
from server.services.specs import Loc, Origin, locate
from server.services.system import _online_since
from server.settings import Settings
from server.spec import RunSpec

Field = Literal["model", "dataset"]
KINDS: dict[Field, str] = {"model": "models", "dataset": "datasets"}


def reported(info: Any, kind: str) -> dict[str, str]:
    """name -> "distribution version" from one worker's info (tolerant: old workers and
    hand-made rows may have none, or a malformed one)."""
    plugins = info.get("plugins") if isinstance(info, dict) else None
    names = plugins.get(kind) if isinstance(plugins, dict) else None
    if not isinstance(names, dict):
        return {}
    return {str(k): str(v) for k, v in names.items()}


def online_offers(session: Session, settings: Settings) -> list[tuple[str, list[str], Any]]:
    """(name, queues, info) of every online worker."""
    rows = session.execute(
        select(WorkerRecord.name, WorkerRecord.queues, WorkerRecord.info).where(
            WorkerRecord.stopped_at.is_(None),
            WorkerRecord.last_seen >= _online_since(settings),
        ).order_by(WorkerRecord.name)
    ).all()
    return [(name, list(queues or ()), info) for name, queues, info in rows]


def available(offers: Sequence[tuple[str, list[str], Any]], queue: str | None,
              kind: str) -> dict[str, list[str]]:
    """name -> ["worker: dist version", ...] for the workers consuming `queue` (any: None)."""
    out: dict[str, list[str]] = {}
    for worker, queues, info in offers:
        if queue is None or queue in queues:
            for name, label in reported(info, kind).items():
                out.setdefault(name, []).append(f"{worker}: {label}")
    return dict(sorted(out.items()))


def check_available(session: Session, settings: Settings, specs: Sequence[RunSpec],
                    origins: Sequence[Origin], fallback: Loc) -> None:
    """InvalidRequest at the model/dataset field of the first spec naming a plug-in that no
    online worker of its queue reports. No query when no spec names a plug-in."""
    wanted = [(spec, f) for spec in specs for f in KINDS
              if (spec.plugin_model if f == "model" else spec.plugin_dataset)]
    if not wanted:
        return
    offers = online_offers(session, settings)
    for spec, field in wanted:
        name, queue = getattr(spec, field), queue_for(spec.device)
        have = available(offers, queue, KINDS[field])
        if name in have:
            continue
        elsewhere = name in available(offers, None, KINDS[field])
        hint = "; workers of another queue have it: set device to match" if elsewhere else ""
        # Errors are echoed up to 200 characters: what is available comes first.
        raise InvalidRequest(
            locate(field, origins, fallback),
            f"no online worker of queue {queue!r} has the plug-in {field} {name!r}; available: "
            f"{', '.join(have) or 'none'}{hint} (GET /api/v1/plugins)",
            "plugin_unavailable",
        )


def catalogue(session: Session, settings: Settings) -> dict[str, Any]:
    """GET /plugins: per kind, each name with the online workers (and versions) that have
    it and the queues they consume; and the problems workers reported (ignored entries)."""
    offers = online_offers(session, settings)
    out: dict[str, Any] = {}
    for kind in KINDS.values():
        entries: dict[str, dict[str, Any]] = {}
        for worker, queues, info in offers:
            for name, label in reported(info, kind).items():
                e = entries.setdefault(name, {"workers": [], "queues": []})
                e["workers"].append({"name": worker, "distribution": label})
                e["queues"] = sorted(set(e["queues"]) | set(queues))
        out[kind] = dict(sorted(entries.items()))
    problems = []
    for worker, _, info in offers:
        plugins = info.get("plugins") if isinstance(info, dict) else None
        for p in (plugins or {}).get("problems", []) if isinstance(plugins, dict) else []:
            problems.append(f"{worker}: {p}")
    out["problems"] = problems
    return out


def analysis_refusal(spec: RunSpec) -> str | None:
    """Why a run of `spec` cannot have worker analyses, or None. The server bounds an
    analysis by its estimated memory (server/analysis_cost.py), which needs the model's size
    and the dataset's shape: a plug-in's are known only where it is installed."""
    names = [f"{f} {getattr(spec, f)!r}" for f in KINDS
             if (spec.plugin_model if f == "model" else spec.plugin_dataset)]
    if not names:
        return None
    return (f"plug-in {' and '.join(names)}: no worker analyses (the server cannot bound "
            "their cost); use landscope.analyse(...) in your own process")
