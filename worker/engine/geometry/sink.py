"""Where an analysis's results go: grid values per point, and named JSON-able values per step.

An analysis writes two kinds of result (worker/engine/geometry/job.py):
- `points(step, rows)`: the values at flat grid indices (server.analysis_spec.grid_index);
  the unit of idempotent writes, so a chunk written twice changes nothing;
- `values(step, values)`: named JSON-able results that are not grid points (the spectrum, the
  trajectory's projections, interpolation endpoints and barrier, directions info, "meta").
The Celery task's sink writes SQL rows (worker/, helper-owned elsewhere); these two serve tests
and the CLI.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from server.analysis_spec import split_environments


@dataclass(frozen=True)
class GridValue:
    index: int
    loss: float
    acc: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None


class AnalysisSink(Protocol):
    def points(self, step: int, rows: Sequence[GridValue]) -> None: ...

    def values(self, step: int, values: Mapping[str, Any]) -> None: ...


def jsonable(obj: Any) -> Any:
    """Non-finite floats as "nan"/"inf"/"-inf" (the API's convention); tuples as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


class MemoryAnalysisSink:
    """Keeps everything in dicts: points[step][index] = GridValue, values[step][name] = value.

    A point or value written again replaces the earlier one, as the SQL sink's insert-ignore
    keeps the first: both leave one value per key, and a deterministic analysis writes the same.
    """

    def __init__(self) -> None:
        self.grid: dict[int, dict[int, GridValue]] = {}
        self.named: dict[int, dict[str, Any]] = {}

    def points(self, step: int, rows: Sequence[GridValue]) -> None:
        bucket = self.grid.setdefault(step, {})
        for row in rows:
            bucket[row.index] = row

    def values(self, step: int, values: Mapping[str, Any]) -> None:
        self.named.setdefault(step, {}).update(values)

    def losses(self, step: int) -> list[float]:
        """The loss at every stored index of `step`, in index order."""
        bucket = self.grid.get(step, {})
        return [bucket[i].loss for i in sorted(bucket)]


def _cell(x: float | None) -> str:
    return "" if x is None else repr(float(x))  # repr: exact, and nan/inf as words


class FileAnalysisSink(MemoryAnalysisSink):
    """What `landscope analyse` writes into its output folder.

    - points.csv: step,idx,ix,iy,x,y,loss,acc,test_loss,test_acc (one row per grid point,
      in step and index order; empty cells for values not measured; nan/inf as words);
    - analysis.json: {"spec": the AnalysisSpec, "run": what was analysed, "grid": {"x", "y"},
      "steps": {"<step>": {"values": {...}, "environments": [...], "points": n}}} with
      non-finite floats as strings (environments: job_numerics.py).
    Both are rewritten atomically by `flush()` (run_all calls it after each step), so an
    interrupted analysis leaves whole files of the steps it finished.
    """

    def __init__(self, out_dir: Path, header: Mapping[str, Any], x: Sequence[float],
                 y: Sequence[float] | None) -> None:
        super().__init__()
        self.dir = Path(out_dir)
        self.header = dict(header)
        self.x, self.y = list(x), (list(y) if y is not None else None)

    def flush(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        steps = sorted(set(self.grid) | set(self.named))
        doc = {**self.header, "grid": {"x": self.x, "y": self.y},
               "steps": {str(s): self._step_doc(s) for s in steps}}
        _atomic_text(self.dir / "analysis.json", json.dumps(jsonable(doc), indent=2) + "\n")
        nx = len(self.x)
        tmp = self.dir / "points.csv.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["step", "idx", "ix", "iy", "x", "y", "loss", "acc", "test_loss",
                          "test_acc"])
            for s in sorted(self.grid):
                for i in sorted(self.grid[s]):
                    r = self.grid[s][i]
                    iy, ix = divmod(i, nx)
                    yv = self.y[iy] if self.y is not None else None
                    out.writerow([s, i, ix, iy, _cell(self.x[ix]), _cell(yv), _cell(r.loss),
                                  _cell(r.acc), _cell(r.test_loss), _cell(r.test_acc)])
        os.replace(tmp, self.dir / "points.csv")

    def _step_doc(self, step: int) -> dict[str, Any]:
        """A step's values, the environments it was computed in apart (as the API's)."""
        named, envs = split_environments(self.named.get(step, {}))
        return {"values": named, "environments": envs, "points": len(self.grid.get(step, {}))}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
