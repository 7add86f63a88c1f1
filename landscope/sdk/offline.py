"""Offline runs: `landscope.init(dir=...)` with no server, and reading run folders back for
`landscope sync`.

An offline run directory is a `landscope train --out` run folder's layout (FileSink:
scalars.csv, landscape.csv, distributions.jsonl) plus a run.json that says which run it is:
    {"format": "landscope-sdk-run/1", "client_id", "name", "experiment", "config", "total",
     "status": "running" | "succeeded" | "failed" | "cancelled", "error", "step", ...}
client_id makes an upload idempotent: syncing a folder twice finds the same server run, and the
points it already has are ignored. A `landscope train --out` run folder (run.json with a
"spec") syncs too, under an id derived from the folder and its run.json.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landscope.sdk.wire import Batch, from_json_float
from worker.engine.file_sink import FileSink
from worker.engine.sink import Distribution, EtaRecord

FORMAT = "landscope-sdk-run/1"
RUN_JSON = "run.json"
SIZES = ("batch_size", "train_size")  # the x-axis (RunOut.x_axis), only when given


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


class OfflineWriter:
    """Writes one run to a directory, on the calling thread (buffered file writes)."""

    def __init__(self, run_dir: Path, record: dict[str, Any]) -> None:
        self.dir = run_dir
        self.record = record
        self.sink = FileSink(run_dir)

    @classmethod
    def create(cls, run_dir: Path, *, client_id: str, name: str, experiment: str | None,
               config: dict[str, Any], total: int | None,
               environment: dict[str, Any] | None = None, **sizes: int) -> OfflineWriter:
        """`sizes`: batch_size and train_size when given (the x-axis, sent by sync)."""
        run_dir = Path(run_dir)
        if (run_dir / RUN_JSON).exists():
            raise FileExistsError(f"{run_dir} already holds a run ({run_dir / RUN_JSON}); "
                                  "give each offline run a directory of its own")
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {"format": FORMAT, "client_id": client_id, "name": name,
                  "experiment": experiment, "config": config, "total": total, **sizes,
                  "status": "running", "error": None, "step": None,
                  "created_at": _now(), "finished_at": None, "environment": environment}
        writer = cls(run_dir, record)
        _write_json(run_dir / RUN_JSON, record)
        return writer

    def put_scalars(self, step: int, keys: tuple[str, ...], values: tuple) -> None:
        self.sink.scalars(step, dict(zip(keys, values, strict=True)))

    def put_row(self, row: tuple) -> None:
        self.put_scalars(*row)

    def put_etas(self, step: int, probe: str, records: Sequence[EtaRecord]) -> None:
        self.sink.eta_records(step, probe, records)

    def put_dists(self, step: int, records: Sequence[Distribution]) -> None:
        self.sink.distributions(step, records)

    def flush(self) -> None:
        self.sink.flush()

    def finish(self, end: dict[str, Any]) -> None:
        self.sink.close()
        self.record.update(end, finished_at=_now())
        _write_json(self.dir / RUN_JSON, self.record)


# -- reading a run folder back ---------------------------------------------------------------


@dataclass
class RunFolder:
    """What `landscope sync` needs of a run folder: how to create the run, its records, and
    how it ended (None: it did not, e.g. the process was killed)."""

    path: Path
    create: dict[str, Any]  # the POST /sdk/runs body
    end: dict[str, Any] | None  # the POST /runs/{id}/finish body

    def points(self) -> int:
        """Records to send (scalar points + eta records + histograms), for a progress bar."""
        n = 0
        for name in ("scalars.csv", "landscape.csv", "distributions.jsonl"):
            p = self.path / name
            if p.exists():
                with open(p, "rb") as fh:
                    n += sum(1 for _ in fh) - (0 if name.endswith(".jsonl") else 1)
        return max(n, 0)

    def batches(self, max_points: int = 50_000) -> Iterator[Batch]:
        yield from read_batches(self.path, max_points)


def read_run_folder(path: Path) -> RunFolder:
    """An offline SDK run folder or a `landscope train --out` run folder; ValueError if
    `path` is neither."""
    path = Path(path)
    try:
        rec = json.loads((path / RUN_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a run folder: cannot read {RUN_JSON} ({exc})") from None
    if rec.get("format") == FORMAT:
        create = {k: rec.get(k) for k in ("client_id", "name", "experiment", "config", "total",
                                          "environment")}
        create.update({k: rec[k] for k in SIZES if rec.get(k) is not None})
        end = None
        if rec.get("status") in ("succeeded", "failed", "cancelled"):
            end = {"status": rec["status"], "error": rec.get("error"), "step": rec.get("step")}
        return RunFolder(path, create, end)
    if isinstance(rec.get("spec"), dict):
        return _train_folder(path, rec)
    raise ValueError(f"{path / RUN_JSON} is neither an offline SDK run nor a "
                     "`landscope train` run")


def _train_folder(path: Path, rec: dict[str, Any]) -> RunFolder:
    real = path.resolve()
    # The same folder with the same run.json is the same run; a retrained one is a new run.
    digest = hashlib.sha256(str(real).encode() + b"\0" + (path / RUN_JSON).read_bytes())
    spec = rec["spec"]
    create = {"client_id": digest.hexdigest()[:32], "name": real.name,
              "experiment": real.parent.name or None, "config": spec,
              "total": spec.get("steps") if isinstance(spec.get("steps"), int) else None,
              "environment": _train_environment(rec)}
    x_axis = (rec.get("info") or {}).get("x_axis") if isinstance(rec.get("info"), dict) else None
    if isinstance(x_axis, dict):  # what the trainer drew from (worker/engine/trainer.py)
        create.update({k: x_axis[k] for k in SIZES if isinstance(x_axis.get(k), int)})
    status, step = rec.get("status"), rec.get("next_step")
    if status == "succeeded":
        end = {"status": "succeeded", "error": None, "step": step}
    elif status == "diverged":
        end = {"status": "failed", "error": f"diverged at step {rec.get('diverged_at')}",
               "step": step}
    else:  # paused or cancelled: it stopped before its planned end
        end = {"status": "cancelled", "error": f"landscope train ended it: {status}",
               "step": step}
    return RunFolder(path, create, end)


def _train_environment(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The environment a `landscope train` run.json recorded (info.environment), if any."""
    info = rec.get("info")
    env = info.get("environment") if isinstance(info, dict) else None
    return env if isinstance(env, dict) else None


def read_batches(path: Path, max_points: int = 50_000) -> Iterator[Batch]:
    """The folder's records as ingest batches of at most `max_points` records each."""
    batch = Batch()
    for add in _records(path):
        add(batch)
        if batch.points >= max_points:
            yield batch
            batch = Batch()
    if batch:
        yield batch


def _records(path: Path) -> Iterator[Any]:
    """Callables that add one stored row to a Batch (scalars, then etas, then histograms)."""
    scalars = path / "scalars.csv"
    if scalars.exists():
        with open(scalars, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                step, key, value = int(row["step"]), row["key"], from_json_float(row["value"])
                yield lambda b, s=step, k=key, v=value: b.add_scalars(s, {k: v})
    etas = path / "landscape.csv"
    if etas.exists():
        with open(etas, newline="", encoding="utf-8") as fh:
            group: list[EtaRecord] = []
            at: tuple[int, str] | None = None
            for row in csv.DictReader(fh):
                here = (int(row["step"]), row["probe"])
                if here != at and group:  # one probe's step is one record group on the wire
                    yield lambda b, a=at, g=group: b.add_etas(a[0], a[1], g)
                    group = []
                at = here
                group.append(EtaRecord(*(from_json_float(row[f]) for f in
                                         ("multiplier", "eta", "loss", "grad_dist"))))
            if group:
                yield lambda b, a=at, g=group: b.add_etas(a[0], a[1], g)
    dists = path / "distributions.jsonl"
    if dists.exists():
        with open(dists, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield _dist_adder(json.loads(line))


def _dist_adder(obj: dict[str, Any]):
    step = int(obj.pop("step"))
    for f in ("lo", "hi", "mean", "var"):
        obj[f] = from_json_float(obj[f])
    obj["quantiles"] = {k: from_json_float(v) for k, v in (obj.get("quantiles") or {}).items()}
    d = Distribution(**obj)
    return lambda b: b.add_dists(step, [d])
