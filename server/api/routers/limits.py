"""This server's limits, so a client (the dashboard's cost box) can check a spec's estimated
cost (server/cost.py) before submitting it."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.deps import SettingsDep
from server.schemas import LimitsOut

router = APIRouter(tags=["system"])


@router.get("/limits")
def limits(settings: SettingsDep) -> LimitsOut:
    """The LANDSCOPE_MAX_* settings: per run (steps, widest layer, batch, parameters, memory,
    dataset, cost in training steps) and for the queue."""
    return LimitsOut.model_validate(settings, from_attributes=True)
