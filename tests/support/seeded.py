"""Seed groups of synthetic runs: an experiment with `seeds` runs per normalisation that
differ only in their seed (and so in their data: the synthetic run's noise follows its id)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, update

from server.db.models import Run
from tests.support.synthetic import create_experiment


def seeded_experiment(engine: Engine, norms: tuple[str, ...] = ("none", "batch"),
                      seeds: int = 3, **kw: Any) -> tuple[int, list[list[int]]]:
    """(experiment id, run ids by norm in `norms` order, one per seed)."""
    exp, ids = create_experiment(engine, [n for n in norms for _ in range(seeds)], **kw)
    with engine.begin() as conn:
        for i, rid in enumerate(ids):
            spec = conn.execute(select(Run.spec).where(Run.id == rid)).scalar_one()
            conn.execute(update(Run).where(Run.id == rid).values(
                spec={**spec, "seed": i % seeds}))
    return exp, [ids[i * seeds:(i + 1) * seeds] for i in range(len(norms))]
