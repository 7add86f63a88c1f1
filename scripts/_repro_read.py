"""The reading half of scripts/reproduce_figures.py: a run directory as `run` wrote it
(`landscope train --out`'s layout: run.json, scalars.csv, landscape.csv, analyses.json) back
into the RunData server/reproduction/ judges."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from scripts import _reproduce_analyses as A
from server import reproduction as R


def _num(text: str) -> float:
    return float(text)  # "nan", "inf", "-inf" parse


def load_run(run_dir: Path) -> R.RunData:
    rec = json.loads((run_dir / "run.json").read_text())
    series: dict[str, tuple[list[int], list[float]]] = {}
    with (run_dir / "scalars.csv").open() as fh:
        for row in csv.DictReader(fh):
            steps, values = series.setdefault(row["key"], ([], []))
            steps.append(int(row["step"]))
            values.append(_num(row["value"]))
    etas = []
    with (run_dir / "landscape.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["probe"] == "landscape":
                etas.append(R.EtaPoint(int(row["step"]), _num(row["multiplier"]),
                                       _num(row["eta"]), _num(row["loss"]),
                                       _num(row["grad_dist"])))
    for steps, values in series.values():  # files are in step order; keep it so
        order = sorted(range(len(steps)), key=steps.__getitem__)
        steps[:], values[:] = [steps[i] for i in order], [values[i] for i in order]
    return R.RunData(rec["spec"], series, rec["status"], etas, run_dir.name,
                     A.load_analyses(run_dir))


def load_experiment(results: Path, key: str) -> list[R.RunData]:
    d = results / key
    if not d.is_dir():
        return []
    return [load_run(p) for p in sorted(d.iterdir()) if (p / "run.json").exists()]
