"""Synthetic runs written straight into the database, shaped like the engine's records: the
dashboard benchmark's 8 x 10,000-step experiment and the tests' fixtures. Not measurements:
smooth made-up curves (a run without normalisation has the wider bands, as in the paper) so a
figure has something of the right size and shape to draw, including a diverged run's NaNs.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, update

from server.db.metrics import (
    insert_distributions,
    insert_points,
    insert_probe_records,
    series_ids,
)
from server.db.models import Experiment, Run, encode_value, utcnow
from server.db.session import make_sessionmaker, transaction
from server.spec import RunSpec, build_spec

BASE_SPEC: dict[str, Any] = {
    "model": "mlp", "depth": 6, "width": 128, "dataset": "mnist1d", "lr": 0.5,
    "batch_size": 128, "steps": 10_000, "eval_every": 100,
    "probes": {"landscape": {"every": 20}, "ics": {"every": 20, "layers": [3, 5]},
               "activations": {"every": 100}, "sharpness": {"every": 100}},
}
# How much rougher each normalisation's landscape is than BatchNorm's (made up, paper-shaped).
ROUGHNESS = {"none": 6.0, "batch": 1.0, "noisy_batch": 1.3, "noise": 8.0, "l1": 1.2,
             "l2": 1.4, "linf": 2.0, "layer": 2.5, "group": 2.2}


@dataclass
class SyntheticRun:
    spec: RunSpec
    seed: int = 0
    diverge_at: int | None = None  # from this step on, every value is NaN (train loss inf)

    @property
    def rough(self) -> float:
        return ROUGHNESS.get(self.spec.norm, 3.0)

    def _noise(self, step: int, key: str) -> float:
        # A pure function of (seed, step, key): writing a range twice gives the same values.
        h = zlib.crc32(f"{self.seed}:{step}:{key}".encode())
        return (h / 0xFFFFFFFF) * 2 - 1

    def loss(self, step: int) -> float:
        tau = 400 * self.rough ** 0.5
        return 0.2 + 2.1 * math.exp(-step / tau) + 0.08 * self._noise(step, "loss")

    def scalars(self, step: int) -> dict[str, float]:
        """Every scalar the engine would record at `step` under the spec's schedule."""
        s, p = self.spec, self.spec.probes
        out: dict[str, float] = {}
        loss = self.loss(step)
        out["train/loss"] = loss
        out["train/acc"] = max(0.0, min(1.0, 1.0 - loss / 2.5 + 0.03 * self._noise(step, "a")))
        out["grad/norm"] = self.rough * (0.5 + loss) * (1 + 0.2 * self._noise(step, "g"))
        out["dist/init"] = 3.0 * math.log1p(step / 200)
        if s.eval_every and step % s.eval_every == 0:
            out["test/loss"] = loss * 1.08
            out["test/acc"] = max(0.0, 1.0 - loss * 1.08 / 2.5)
        if p.landscape.due(step):
            spread = 0.05 * self.rough * (1 + abs(self._noise(step, "spread")))
            out["landscape/loss_min"] = loss * (1 - spread / 2)
            out["landscape/loss_max"] = loss * (1 + spread * 3)
            out["landscape/grad_dist_min"] = 0.3 * self.rough
            out["landscape/grad_dist_max"] = 2.5 * self.rough ** 1.3 * (1 + 0.3 * abs(
                self._noise(step, "gd")))
            out["landscape/beta"] = 3 * self.rough ** 0.6 * (1 + 0.2 * self._noise(step, "b"))
        if p.ics.due(step):
            for layer in p.ics.layers:
                out[f"ics/L{layer}/l2"] = 0.1 * layer * self.rough * (1 + 0.3 * abs(
                    self._noise(step, f"ics{layer}")))
                out[f"ics/L{layer}/cos"] = 0.95 - 0.05 * self.rough * abs(self._noise(step, "c"))
        if p.sharpness.due(step):
            out["sharpness/top_eig"] = min(2 / s.lr, 0.5 + step / 400) * (1 + 0.1 * self._noise(
                step, "eig"))
            out["sharpness/edge"] = 2 / s.lr
        if self.diverge_at is not None and step >= self.diverge_at:
            out = {k: math.nan for k in out}
            out["train/loss"] = math.inf
        return out

    def eta_records(self, step: int) -> list[dict[str, Any]]:
        p = self.spec.probes.landscape
        if not p.due(step):
            return []
        bad = self.diverge_at is not None and step >= self.diverge_at
        loss = self.loss(step)
        return [
            {"probe": "landscape", "step": step, "multiplier": m, "eta": m * self.spec.lr,
             "loss": math.nan if bad else loss * (1 + 0.05 * m * self.rough),
             "grad_dist": math.nan if bad else 0.4 * m * self.rough ** 1.3 * (1 + step / 5000)}
            for m in p.multipliers
        ]

    def histograms(self, step: int) -> list[dict[str, Any]]:
        a = self.spec.probes.activations
        if not a.due(step):
            return []
        lo, hi = a.range
        edges = np.linspace(lo, hi, a.bins + 1)
        out = []
        for layer in range(1, len(self.spec.layer_widths()) + 1):
            # Without normalisation the activations drift and widen as training goes on.
            drift = 0.0 if self.spec.norm != "none" else step / 4000 * layer / 3
            sd = 1.0 if self.spec.norm != "none" else 1.0 + step / 5000
            for scope, n in (("layer", 4096), ("unit", 128)):
                cdf = 0.5 * (1 + np.vectorize(math.erf)((edges - drift) / (sd * math.sqrt(2))))
                counts = np.round(np.diff(cdf) * n).astype(int).tolist()
                under = int(round(cdf[0] * n))
                over = int(round((1 - cdf[-1]) * n))
                bad = self.diverge_at is not None and step >= self.diverge_at
                q = {f"q{int(x * 100):02d}": drift + sd * z for x, z in
                     ((0.01, -2.33), (0.05, -1.64), (0.25, -0.67), (0.5, 0.0), (0.75, 0.67),
                      (0.95, 1.64), (0.99, 2.33))}
                out.append({
                    "layer": layer, "scope": scope, "step": step,
                    "unit": None if scope == "layer" else 7, "lo": lo, "hi": hi,
                    "counts": [0] * a.bins if bad else counts,
                    "underflow": 0 if bad else under, "overflow": 0 if bad else over,
                    "nonfinite": n if bad else 0,
                    "stats": {"mean": "NaN" if bad else drift, "var": "NaN" if bad else sd ** 2,
                              "quantiles": {k: "NaN" if bad else v for k, v in q.items()}},
                })
        return out


def write_steps(engine: Engine, run_id: int, run: SyntheticRun, start: int, stop: int) -> None:
    """Store steps [start, stop) of `run` as the worker's SQL sink would, in one transaction."""
    points: list[tuple[str, int, float | None, int]] = []
    etas: list[dict[str, Any]] = []
    hists: list[dict[str, Any]] = []
    for step in range(start, stop):
        points += [(k, step, *encode_value(v)) for k, v in run.scalars(step).items()]
        etas += [{"run_id": run_id, **r} for r in run.eta_records(step)]
        hists += [{"run_id": run_id, **h} for h in run.histograms(step)]
    with engine.begin() as conn:
        ids = series_ids(conn, run_id, {k for k, *_ in points})
        insert_points(conn, [(ids[k], step, v, f) for k, step, v, f in points])
        insert_probe_records(conn, etas)
        insert_distributions(conn, hists)
        # What the worker's lease does as it trains: progress, and a heartbeat.
        conn.execute(update(Run).where(Run.id == run_id, Run.status == "running")
                     .values(step=stop, heartbeat_at=utcnow()))


def create_experiment(engine: Engine, norms: list[str], *, steps: int = 10_000,
                      done: int | None = None, status: str = "succeeded",
                      diverge: dict[str, int] | None = None,
                      spec_changes: dict[str, Any] | None = None) -> tuple[int, list[int]]:
    """An experiment varying the normalisation, its runs' rows, and `done` steps of data for
    each (all `steps` by default). Returns (experiment id, run ids)."""
    base = {**BASE_SPEC, "steps": steps, **(spec_changes or {})}
    done = steps if done is None else done
    diverge = diverge or {}
    now = utcnow()
    with transaction(make_sessionmaker(engine)) as session:
        exp = Experiment(name="synthetic", preset=None, base_spec=base, vary={"norm": norms})
        session.add(exp)
        session.flush()
        runs = []
        for norm in norms:
            spec = build_spec({**base, "norm": norm})
            d = diverge.get(norm)
            run_status = "diverged" if d is not None and status != "running" else status
            run = Run(experiment_id=exp.id, name=spec.name_hint(), spec=spec.model_dump(
                mode="json"), status=run_status, queue="landscope.any", total=steps,
                step=done if d is None else min(done, d + 1), diverged_at=d,
                last_loss=math.inf if d is not None and done > d else 0.2,
                worker="synthetic@bench", device="cpu", attempts=1,
                created_at=now - timedelta(minutes=5), enqueued_at=now - timedelta(minutes=5),
                started_at=now - timedelta(minutes=4),
                # A running run needs a live heartbeat, or the API's reconciler hands it back
                # to the queue as one whose worker died.
                heartbeat_at=now if run_status == "running" else None,
                finished_at=now if run_status != "running" else None)
            session.add(run)
            runs.append((run, spec))
        session.flush()
        ids = [r.id for r, _ in runs]
        exp_id = exp.id
    for run_id, (_run, spec), norm in zip(ids, runs, norms, strict=True):
        d = diverge.get(norm)
        stop = done if d is None else min(done, d + 1)
        write_steps(engine, run_id, SyntheticRun(spec, seed=run_id, diverge_at=d), 0, stop)
    return exp_id, ids
