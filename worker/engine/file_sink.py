"""A sink that writes a run's metrics under a directory: what `landscope train --out DIR` produces.

Layout (append-only; a resumed run first drops the rows at or after the step it resumes from,
so its files end up exactly as an uninterrupted run's):
- scalars.csv        step,key,value             value may be nan, inf or -inf
- landscape.csv      step,probe,multiplier,eta,loss,grad_dist
- distributions.jsonl one JSON object per histogram; non-finite floats as "nan"/"inf"/"-inf"
CSV keeps nan/inf as the literal words, which numpy, pandas and spreadsheets read back.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from worker.engine.sink import Distribution, EtaRecord


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else repr(float(x))  # 'nan', 'inf', '-inf'


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return _json_float(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def _row_step(line: str, name: str) -> float:
    """The step of one stored row; headers sort first (-1)."""
    if name.endswith(".jsonl"):
        return json.loads(line)["step"]
    head = line.split(",", 1)[0]
    return int(head) if head.isascii() and head.isdigit() else -1


class FileSink:
    def __init__(self, out_dir: Path, from_step: int = 0) -> None:
        """from_step 0 starts fresh files; a resumed run passes the step it resumes at."""
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._drop_from(from_step)
        self._scalars, self._scalar_csv = self._open_csv("scalars.csv", ["step", "key", "value"])
        self._eta, self._eta_csv = self._open_csv(
            "landscape.csv", ["step", "probe", "multiplier", "eta", "loss", "grad_dist"]
        )
        self._dists = open(self.dir / "distributions.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def _drop_from(self, step: int) -> None:
        for name in ("scalars.csv", "landscape.csv", "distributions.jsonl"):
            path = self.dir / name
            if step == 0 or not path.exists():
                path.unlink(missing_ok=True)
                continue
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            keep = [ln for ln in lines if _row_step(ln, name) < step]
            path.write_text("".join(keep), encoding="utf-8")

    def _open_csv(self, name: str, header: list[str]) -> tuple[IO[str], Any]:
        path = self.dir / name
        fresh = not path.exists() or path.stat().st_size == 0
        fh = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        writer = csv.writer(fh)
        if fresh:
            writer.writerow(header)
        return fh, writer

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self._scalar_csv.writerows((step, k, repr(float(v))) for k, v in values.items())

    def eta_records(self, step: int, probe: str, records: Sequence[EtaRecord]) -> None:
        self._eta_csv.writerows(
            (step, probe, repr(r.multiplier), repr(r.eta), repr(r.loss), repr(r.grad_dist))
            for r in records
        )

    def distributions(self, step: int, records: Sequence[Distribution]) -> None:
        for r in records:
            self._dists.write(json.dumps(_jsonable({"step": step, **asdict(r)})) + "\n")

    def flush(self) -> None:
        for fh in (self._scalars, self._eta, self._dists):
            fh.flush()

    def close(self) -> None:
        for fh in (self._scalars, self._eta, self._dists):
            fh.close()
