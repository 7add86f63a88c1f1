"""What the /analyses API tests share: the endpoint, the tiny classification run they analyse
(a snapshot every 10 steps), the `arrange` fixture that inserts such a run with its snapshot
rows as a worker would have left them, and a table's row count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from server.db.models import Snapshot
from server.db.session import make_sessionmaker
from server.spec import build_spec

API = "/api/v1/analyses"
# A tiny classification run: 40 steps, a snapshot every 10 (so 0, 10, 20, 30, 40).
RUN = {"model": "mlp", "depth": 3, "width": 16, "dataset": "mnist1d", "steps": 40,
       "batch_size": 32, "snapshots": {"every": 10}, "device": "cpu"}


def run_spec(**changes: Any) -> dict:
    return build_spec({**RUN, **changes}).model_dump(mode="json")


@pytest.fixture(name="arrange")
def arrange_fixture(api_db: Engine, make_run) -> Callable[..., int]:
    """A run with its spec, state and snapshot rows; returns its id (imported as
    arrange_fixture, taken as `arrange`)."""

    def make(*, saved=(0, 10, 20, 30, 40), status="succeeded", step=40, **fields: Any) -> int:
        spec = fields.pop("spec", run_spec())
        run_id = make_run(spec=spec, status=status, step=step, total=spec["steps"],
                          queue="landscope.cpu", **fields)
        with make_sessionmaker(api_db).begin() as s:
            s.add_all(Snapshot(run_id=run_id, step=k, path=f"/snap/{run_id}/{k}.pt", bytes=100)
                      for k in saved)
        return run_id

    return make


def count(api_db: Engine, model) -> int:
    with api_db.connect() as c:
        return c.scalar(select(func.count()).select_from(model))
