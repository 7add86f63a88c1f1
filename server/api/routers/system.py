"""Health, workers and presets."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from server.api.deps import ReadAuthorized, SessionDep, SettingsDep
from server.api.responses import UNAUTHORIZED
from server.presets import PRESETS
from server.schemas import HealthOut, PresetOut, WorkerOut
from server.schemas_plugins import PluginsOut
from server.services import plugins as plugin_service
from server.services import system
from server.services.views import preset_out

router = APIRouter(tags=["system"])


@router.get("/health", responses={503: {"model": HealthOut}})
async def health(request: Request, response: Response) -> HealthOut:
    """Whether the database and the broker can be reached; 503 when either cannot or does not
    answer, within 2 s whatever they do. Open even when reads are protected: load balancers
    and container health checks call it."""
    # async: it must not wait for a thread of the request pool, which stuck requests may fill.
    out = await request.app.state.health.check()
    if out.status != "ok":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return out


@router.get("/workers", dependencies=[ReadAuthorized], responses=UNAUTHORIZED)
def workers(
    session: SessionDep, settings: SettingsDep, include_offline: bool = False
) -> list[WorkerOut]:
    """Workers seen within the last few heartbeats (and, on request, the others)."""
    return system.list_workers(session, settings, include_offline)


@router.get("/plugins", dependencies=[ReadAuthorized], responses=UNAUTHORIZED)
def plugins(session: SessionDep, settings: SettingsDep) -> PluginsOut:
    """Plug-in models and datasets of the online workers: the names a run spec may use."""
    return PluginsOut.model_validate(plugin_service.catalogue(session, settings))


@router.get("/presets", dependencies=[ReadAuthorized], responses=UNAUTHORIZED)
def presets() -> list[PresetOut]:
    """Named experiments: the paper's figures and quick CPU demos."""
    return [preset_out(p) for p in PRESETS.values()]
