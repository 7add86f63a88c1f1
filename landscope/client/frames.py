"""API JSON -> plain records with real floats -> pandas DataFrames.

pandas is an optional extra (`pip install 'landscope[notebook]'`): it is imported only when a
frame is built, and every method that returns a frame also takes `raw=True` for the records.
Non-finite numbers travel as "NaN", "Infinity" and "-Infinity" (docs/api.md); they become
float NaN and +-inf here and stay in the frames: a diverged run is data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
TIME_COLUMNS = ("created_at", "enqueued_at", "started_at", "finished_at", "heartbeat_at")


def pandas():
    """The pandas module, or an ImportError that names the extra to install."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(
            "landscope.Client builds pandas DataFrames: install the notebook extra, "
            "`pip install 'landscope[notebook]'` (or pass raw=True for plain records)"
        ) from exc
    return pd


def to_float(v: Any) -> float:
    """A JSON number, a non-finite string or null (-> NaN) as a float."""
    if v is None:
        return math.nan
    if isinstance(v, str):
        return NONFINITE[v] if v in NONFINITE else float(v)
    return float(v)


def decode(value: Any) -> Any:
    """Nested JSON with the API's non-finite strings turned back into floats (analysis values,
    histogram stats). Only the three exact spellings are numbers; any other string stays."""
    if isinstance(value, str):
        return NONFINITE.get(value, value)
    if isinstance(value, Mapping):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """{"probes": {"landscape": {"every": 10}}} -> {"spec.probes.landscape.every": 10}; lists
    and empty mappings stay whole (one cell)."""
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def frame(records: Iterable[Mapping[str, Any]], columns: list[str]):
    """A DataFrame with at least `columns`, in that order (an empty answer keeps its shape)."""
    pd = pandas()
    rows = list(records)
    df = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=columns)
    extra = [c for c in df.columns if c not in columns]
    df = df[[c for c in columns if c in df.columns] + extra]
    for c in TIME_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
    return df


def metric_records(run_id: int, series: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per point (raw) or bucket (downsampled: value is the bucket's finite mean,
    min/max its finite envelope, count its points, nonfinite how many were NaN or +-inf).

    A raw point is a bucket of one, so a frame that mixes both forms has every column: its
    min = max = the value when finite, count 1, nonfinite 0 or 1."""
    out: list[dict[str, Any]] = []
    for key, s in series.items():
        steps, values = s.get("steps") or [], s.get("values") or []
        if s.get("downsampled"):
            lo, hi = s.get("min") or [], s.get("max") or []
            counts, bad = s.get("counts") or [], s.get("nonfinite") or []
            out.extend({"run_id": run_id, "key": key, "step": step, "value": to_float(v),
                        "min": to_float(a), "max": to_float(b), "count": int(n),
                        "nonfinite": int(k), "downsampled": True}
                       for step, v, a, b, n, k in zip(steps, values, lo, hi, counts, bad,
                                                      strict=True))
        else:
            for step, v in zip(steps, values, strict=True):
                x = to_float(v)
                finite = math.isfinite(x)
                out.append({"run_id": run_id, "key": key, "step": step, "value": x,
                            "min": x if finite else math.nan, "max": x if finite else math.nan,
                            "count": 1, "nonfinite": 0 if finite else 1, "downsampled": False})
    return out


METRIC_COLUMNS = ["run_id", "key", "step", "value"]
ENVELOPE_COLUMNS = ["min", "max", "count", "nonfinite", "downsampled"]


def metrics_frame(records: list[dict[str, Any]]):
    """Long form (run_id, key, step, value); the envelope columns only when some series came
    back downsampled (else they say nothing a raw point does not)."""
    pd = pandas()
    downsampled = any(r["downsampled"] for r in records)
    columns = METRIC_COLUMNS + (ENVELOPE_COLUMNS if downsampled else [])
    if not records:
        return pd.DataFrame({"run_id": pd.Series(dtype="int64"), "key": pd.Series(dtype=str),
                             "step": pd.Series(dtype="int64"),
                             "value": pd.Series(dtype="float64")})
    df = pd.DataFrame.from_records(records, columns=columns)
    df["value"] = df["value"].astype("float64")
    return df


def probe_records(run_id: int, records: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"run_id": run_id, "probe": r["probe"], "step": r["step"],
             "multiplier": float(r["multiplier"]), "eta": float(r["eta"]),
             "loss": to_float(r["loss"]), "grad_dist": to_float(r["grad_dist"])}
            for r in records]


PROBE_COLUMNS = ["run_id", "probe", "step", "multiplier", "eta", "loss", "grad_dist"]


def distribution_records(run_id: int, records: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Histogram bins stay one list per record; stats become columns (mean, var, q05...)."""
    out = []
    for r in records:
        stats = decode(r.get("stats") or {})
        row = {"run_id": run_id, **{k: v for k, v in r.items() if k != "stats"},
               "mean": to_float(stats.get("mean")), "var": to_float(stats.get("var"))}
        row.update((name, to_float(q)) for name, q in (stats.get("quantiles") or {}).items())
        out.append(row)
    return out


DISTRIBUTION_COLUMNS = ["run_id", "step", "layer", "scope", "unit", "lo", "hi", "counts",
                        "underflow", "overflow", "nonfinite", "mean", "var"]


def run_record(run: Mapping[str, Any], *, flat: bool) -> dict[str, Any]:
    """A run as one row: the API's fields, last_loss as a float, and with `flat` its spec,
    config and environment spread into dotted columns (`spec.lr`, `config.optimizer.momentum`,
    `environment.torch_threads`) to group by."""
    parts = ("spec", "config", "environment")
    row = {k: v for k, v in run.items() if not (flat and k in parts)}
    row["last_loss"] = to_float(run.get("last_loss"))
    if flat:
        for part in parts:
            if run.get(part):
                flatten(part, run[part], row)
    return row


RUN_COLUMNS = ["id", "name", "experiment_id", "source", "status", "step", "total", "progress",
               "last_loss", "diverged_at", "created_at", "started_at", "finished_at"]


def experiment_record(e: Mapping[str, Any]) -> dict[str, Any]:
    counts = e.get("status_counts") or {}
    row = {k: v for k, v in e.items() if k != "status_counts"}
    row["runs"] = sum(counts.values())
    row.update((f"runs_{status}", n) for status, n in sorted(counts.items()))
    return row


EXPERIMENT_COLUMNS = ["id", "name", "source", "preset", "created_at", "runs"]


def analysis_record(a: Mapping[str, Any]) -> dict[str, Any]:
    progress = a.get("progress") or {}
    row = {k: v for k, v in a.items() if k not in ("progress", "steps")}
    row["steps"] = (a.get("spec") or {}).get("steps")
    row["done_points"] = progress.get("done")
    row["total_points"] = progress.get("total")
    return row


ANALYSIS_COLUMNS = ["id", "run_id", "experiment_id", "group_id", "kind", "bn_mode", "status",
                    "steps", "done_points", "total_points", "error", "created_at", "finished_at"]


def group_records(groups: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """GET /groups as one row per group: its position, key, label, run ids and seeds."""
    return [{"group": i, "key": g["key"], "label": g["label"], "run_ids": list(g["run_ids"]),
             "seeds": list(g["seeds"])} for i, g in enumerate(groups)]


GROUP_COLUMNS = ["group", "key", "label", "run_ids", "seeds"]


def grouped_records(groups: list[Mapping[str, Any]],
                    only: set[str] | None = None) -> list[dict[str, Any]]:
    """GET /groups/metrics in long form: one row per requested group (its position), key and
    bucket; center, lo and hi NaN where no run of the group had a finite value."""
    out: list[dict[str, Any]] = []
    for i, g in enumerate(groups):
        for s in g["series"]:
            if only is not None and s["key"] not in only:
                continue
            out.extend({"group": i, "key": s["key"], "step": float(step),
                        "center": to_float(c), "lo": to_float(a), "hi": to_float(b),
                        "n": int(n), "nonfinite": int(k)}
                       for step, c, a, b, n, k in zip(s["steps"], s["center"], s["lo"], s["hi"],
                                                      s["n"], s["nonfinite"], strict=True))
    return out


GROUPED_COLUMNS = ["group", "key", "step", "center", "lo", "hi", "n", "nonfinite"]
