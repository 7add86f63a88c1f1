"""Batches the server has not acknowledged yet, on disk, so a crash or an unreachable server
loses nothing.

Layout of a spool directory (one run):
- spool.json            what is needed to send the batches later: server, run id, the run's
                        creation payload (its client_id finds the same run again)
- 00000001-512.json.gz  one ingest request body each, exactly as sent (gzipped JSON), named by
                        sequence number (sent in that order) and points it carries
- finish.json           the run's end, when it could not be reported (sent after the batches)
- rejected/             bodies the server refused (4xx), with the reason beside each
A body is written (to a temporary name, then renamed) before it is sent and deleted once the
server acknowledged it: a file present is a batch possibly not stored; resending one that was
stored changes nothing (writes are insert-ignore per run, key and step).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

META = "spool.json"
FINISH = "finish.json"
SUFFIX = ".json.gz"


def default_root() -> Path:
    return Path.home() / ".cache" / "landscope" / "spool"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fh = open(tmp, "wb")  # noqa: SIM115
    except FileNotFoundError:  # the directory was removed under a live run: make it again
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(tmp, "wb")  # noqa: SIM115
    with fh:
        fh.write(data)
    os.replace(tmp, path)  # readers see the whole file or none of it


def is_spool(path: Path) -> bool:
    return (Path(path) / META).is_file()


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        existing = self.batches()
        self._seq = self.seq_of(existing[-1]) if existing else 0
        self._lock = threading.Lock()

    # -- the run this spool belongs to

    def write_meta(self, meta: dict[str, Any]) -> None:
        _write_atomic(self.path / META, json.dumps(meta, indent=2).encode())

    def read_meta(self) -> dict[str, Any]:
        return json.loads((self.path / META).read_text())

    def write_finish(self, record: dict[str, Any]) -> None:
        _write_atomic(self.path / FINISH, json.dumps(record).encode())

    def read_finish(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / FINISH).read_text())
        except FileNotFoundError:
            return None

    def clear_finish(self) -> None:
        (self.path / FINISH).unlink(missing_ok=True)

    # -- batches

    @staticmethod
    def seq_of(path: Path) -> int:
        return int(path.name.split("-", 1)[0])

    @staticmethod
    def points_of(path: Path) -> int:
        return int(path.name[: -len(SUFFIX)].split("-", 1)[1])

    def put(self, body: bytes, points: int) -> Path:
        with self._lock:
            self._seq += 1
            path = self.path / f"{self._seq:08d}-{points}{SUFFIX}"
        _write_atomic(path, body)
        return path

    def batches(self) -> list[Path]:
        """Unacknowledged bodies, oldest first."""
        found = [p for p in self.path.glob(f"*{SUFFIX}") if p.name[0].isdigit()]
        return sorted(found, key=self.seq_of)

    def pending_points(self) -> int:
        return sum(self.points_of(p) for p in self.batches())

    def ack(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def reject(self, path: Path, reason: str) -> Path:
        """Set a refused body aside (kept for a human to read, never resent)."""
        rejected = self.path / "rejected"
        rejected.mkdir(exist_ok=True)
        target = rejected / path.name
        os.replace(path, target)
        (rejected / (path.name + ".reason.txt")).write_text(reason + "\n")
        return target

    def remove_if_done(self) -> bool:
        """Delete the spool once nothing is left to send (rejected bodies keep it)."""
        if self.batches() or self.read_finish() is not None or (self.path / "rejected").exists():
            return False
        for p in self.path.iterdir():
            if p.is_file():
                p.unlink()
        try:
            self.path.rmdir()
        except OSError:  # something of the user's own in it: leave the directory
            return False
        return True
