"""Uploading what a run left on disk: an offline run folder, a `landscope train --out` folder,
or the spool of an online run whose server was away (what `landscope sync DIR` does).

Idempotent throughout: the run is found again by its client_id, the points the server already
has are ignored (insert-ignore per run, key and step), and a finish with the same status is a
no-op. So a sync can be repeated, or interrupted and repeated, and the server ends up with each
point once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from landscope.sdk.api import Api, Rejected, ServerUnreachable
from landscope.sdk.offline import RUN_JSON, RunFolder, read_run_folder
from landscope.sdk.spool import Spool, is_spool

T = TypeVar("T")
Progress = Callable[[int], None]  # called with records just sent


@dataclass
class Target:
    kind: str  # "folder" | "spool"
    path: Path


@dataclass
class Synced:
    path: Path
    run_id: int
    points: int
    note: str  # how the run ended on the server, or why it did not


def find_targets(path: Path) -> list[Target]:
    """Run folders and spools at `path`, in `path/spool/`, or one level below `path`."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory")

    def here(p: Path) -> list[Target]:
        if is_spool(p):
            return [Target("spool", p)]
        found = [Target("folder", p)] if (p / RUN_JSON).is_file() else []
        if (p / "spool").is_dir():  # init(server=..., dir=p): its spools
            found += [Target("spool", s) for s in sorted((p / "spool").iterdir()) if is_spool(s)]
        return found

    targets = here(path)
    if not targets:
        for child in sorted(p for p in path.iterdir() if p.is_dir()):
            targets += here(child)
    if not targets:
        raise ValueError(f"nothing to sync in {path}: no run folder (run.json), no spool "
                         "(spool.json), neither here nor one level below")
    return targets


def retrying(call: Callable[[], T], tries: int = 5, first_wait: float = 0.5) -> T:
    """`call()`, retried with backoff while the server is unreachable."""
    wait = first_wait
    for attempt in range(tries):
        try:
            return call()
        except ServerUnreachable:
            if attempt == tries - 1:
                raise
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


def _finish(api: Api, run_id: int, end: dict[str, Any] | None) -> str:
    if end is None:
        return "not finished (its process did not end it): the server marks it crashed"
    try:
        retrying(lambda: api.finish(run_id, end["status"], end.get("error"), end.get("step")))
    except Rejected as exc:
        if exc.status == 409:  # finished before with another status: the server's word stands
            return f"already finished on the server ({exc})"
        raise
    return end["status"]


def sync_folder(api: Api, folder: RunFolder, progress: Progress | None = None) -> Synced:
    run = retrying(lambda: api.create_run(folder.create))
    sent = 0
    for batch in folder.batches():
        body = batch.encode()
        retrying(lambda b=body: api.ingest(run["id"], b))
        sent += batch.points
        if progress:
            progress(batch.points)
    note = _finish(api, run["id"], folder.end)
    if n := _upload_analyses(api, run["id"], folder.path / "analyses"):
        note += f"; {n} analyses"
    return Synced(folder.path, run["id"], sent, note)


def _upload_analyses(api: Api, run_id: int, folder: Path) -> int:
    """landscope.analyse's results of an offline run (analyses/analysis-<key>.json, written
    by landscope/sdk/analyse.py): each under its own Idempotency-Key, so stored once."""
    done = 0
    for path in sorted(folder.glob("analysis-*.json")) if folder.is_dir() else []:
        doc = json.loads(path.read_text(encoding="utf-8"))
        retrying(lambda d=doc: api.request(
            "POST", f"/runs/{run_id}/analyses/upload", json=d["body"],
            headers={"Idempotency-Key": d["idempotency_key"]}))
        done += 1
    return done


def sync_spool(api: Api, spool: Spool, progress: Progress | None = None) -> Synced:
    """Send a spool's batches in order, deleting each once acknowledged, then its finish;
    the spool is deleted when nothing is left. A body the server refuses (4xx) is set aside
    in rejected/ and the rest still go."""
    meta = spool.read_meta()
    run = retrying(lambda: api.create_run(meta["create"]))
    sent, refused = 0, 0
    for path in spool.batches():
        try:
            retrying(lambda p=path: api.ingest(run["id"], p.read_bytes()))
        except Rejected as exc:
            if exc.status in (404, 409):
                raise
            spool.reject(path, str(exc))
            refused += 1
            continue
        except FileNotFoundError:  # the run's own process sent it meanwhile
            continue
        n = Spool.points_of(path)
        spool.ack(path)
        sent += n
        if progress:
            progress(n)
    end = spool.read_finish()
    note = _finish(api, run["id"], end)
    if end is not None:
        spool.clear_finish()
    if refused:
        note += f"; {refused} batch(es) refused, kept in {spool.path / 'rejected'}"
    if end is not None:  # without its end the run's process may still be writing here
        spool.remove_if_done()
    return Synced(spool.path, run["id"], sent, note)


def spool_server(spool: Spool) -> str:
    return spool.read_meta()["server"]


def pending(target: Target) -> int:
    """Records a target still has to send (for the progress bar's total)."""
    if target.kind == "spool":
        return Spool(target.path).pending_points()
    return read_run_folder(target.path).points()
