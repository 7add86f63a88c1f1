"""Seed groups: runs that differ only in their seed.

A run's identity is its source plus what it was asked to train: a service run's spec, an SDK
run's own config, each without its seed. `group_key` hashes that identity, so runs of one
experiment that vary the seed (and anything else) fall into one group per other setting,
and two experiments asking for the same thing share keys. Labels name what tells a
request's groups apart (the normalisation first), never the seed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.models import Experiment, Run
from server.services.errors import InvalidRequest, NotFound
from server.spec import flatten

SDK_SEED_KEYS = ("seed", "random_seed")
MAX_IDS = 500  # run ids in one GET /groups?runs=
MAX_LABEL_PARTS = 6  # differing settings a label names before it says "…"


def identity(run: Run) -> dict[str, Any]:
    """What makes runs comparable as seeds of one setting: source and spec/config, no seed."""
    if run.source == "sdk":
        config = {k: v for k, v in (run.config or {}).items() if k not in SDK_SEED_KEYS}
        return {"source": "sdk", "config": config}
    spec = {k: v for k, v in (run.spec or {}).items() if k != "seed"}
    return {"source": run.source, "spec": spec}


def group_key(run: Run) -> str:
    """sha256 (first 16 hex digits) of the run's identity as canonical JSON (sorted keys)."""
    text = json.dumps(identity(run), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def seed_of(run: Run) -> int | None:
    """The seed a run was given (an SDK run's config `seed` or `random_seed`), else None."""
    if run.source == "sdk":
        config = run.config or {}
        seeds = [config.get(k) for k in SDK_SEED_KEYS]
    else:
        seeds = [(run.spec or {}).get("seed")]
    for seed in seeds:
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
    return None


@dataclass
class Group:
    key: str
    runs: list[Run] = field(default_factory=list)

    @property
    def run_ids(self) -> list[int]:
        return [r.id for r in self.runs]

    @property
    def seeds(self) -> list[int | None]:
        return [seed_of(r) for r in self.runs]


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Runs by group_key, groups and their runs in the order of first appearance."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = group_key(run)
        groups.setdefault(key, Group(key)).runs.append(run)
    return list(groups.values())


def _settings(run: Run) -> dict[str, Any]:
    """A run's identity as flat dotted keys (a spec's sections, an SDK config's nesting)."""
    ident = identity(run)
    body = ident.get("spec", ident.get("config"))
    return {"source": ident["source"], **flatten(body if isinstance(body, dict) else {})}


def _norm(run: Run) -> str | None:
    value = (run.config or {}).get("norm") if run.source == "sdk" else (run.spec or {}).get("norm")
    return None if value is None else _show(value)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _signature(settings: dict[str, Any], key: str) -> str | None:
    return json.dumps(settings[key], sort_keys=True, default=str) if key in settings else None


def labels(groups: Sequence[Group]) -> list[str]:
    """Per group: its normalisation, then `key=value` for every other setting that differs
    between the groups (the source first, then by key; a few, then "…"). The seed is never
    part of it: it is what a group's runs differ in. A lone group is named by its
    normalisation, or, without one, by its first run's name."""
    flat = [_settings(g.runs[0]) for g in groups]
    keys = sorted({k for f in flat for k in f})
    differing = [k for k in keys if k != "norm" and len({_signature(f, k) for f in flat}) > 1]
    differing.sort(key=lambda k: k != "source")  # service vs SDK first: it explains the rest
    out = []
    for group, settings in zip(groups, flat, strict=True):
        parts = [p for p in [_norm(group.runs[0])] if p is not None]
        shown = [f"{k}={_show(settings[k]) if k in settings else '—'}" for k in differing]
        parts += shown[:MAX_LABEL_PARTS]
        if len(shown) > MAX_LABEL_PARTS:
            parts.append("…")
        out.append(" · ".join(parts) if parts else group.runs[0].name)
    return out


def parse_ids(text: str, loc: Sequence[str | int], limit: int) -> list[int]:
    """"1,2,3" -> [1, 2, 3] (first appearance kept, blanks skipped); a 422 at `loc` for
    anything that is not a positive 4-byte integer, for none, or for more than `limit`."""
    ids: dict[int, None] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isascii() or not part.isdigit() or len(part) > 10 or not (
                1 <= int(part) <= 2**31 - 1):
            raise InvalidRequest(loc, f"{part[:40]!r} is not a run id (a positive integer)")
        ids[int(part)] = None
        if len(ids) > limit:
            raise InvalidRequest(loc, f"more than {limit} run ids; ask for fewer")
    if not ids:
        raise InvalidRequest(loc, "no run id given (a comma-separated list such as 1,2,3)")
    return list(ids)


def load_runs(session: Session, ids: Sequence[int]) -> list[Run]:
    """The runs with these ids, in this order; NotFound names the first that is missing."""
    found = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(list(ids))))}
    for i in ids:
        if i not in found:
            raise NotFound("run", i)
    return [found[i] for i in ids]


def require_runs(session: Session, ids: Iterable[int]) -> None:
    """NotFound for the first of these run ids with no run (ids only; no rows loaded)."""
    wanted = sorted(set(ids))
    have = set(session.scalars(select(Run.id).where(Run.id.in_(wanted))))
    for i in wanted:
        if i not in have:
            raise NotFound("run", i)


def groups_of(session: Session, *, runs: str | None, experiment_id: int | None) -> list[
        tuple[Group, str]]:
    """(group, label) for the runs asked for: a list of ids or an experiment's runs."""
    if (runs is None) == (experiment_id is None):
        raise InvalidRequest(("query", "runs"), "give either runs or experiment_id")
    if runs is not None:
        selected = load_runs(session, parse_ids(runs, ("query", "runs"), MAX_IDS))
    else:
        if session.get(Experiment, experiment_id) is None:
            raise NotFound("experiment", experiment_id)
        selected = list(session.scalars(
            select(Run).where(Run.experiment_id == experiment_id).order_by(Run.id)))
    groups = group_runs(selected)
    return list(zip(groups, labels(groups), strict=True))
