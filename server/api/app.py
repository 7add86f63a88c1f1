"""The FastAPI application: `create_app(settings)`.

On startup (lifespan) it builds the database engine and session factory and one Celery
producer from the settings and keeps them on app.state, and runs the reconciler every
`reconcile_seconds` from startup on: runs saved while the broker was down, runs whose message
the broker lost, and runs of dead workers get sent again (server/services/reconcile.py).
CORS is closed unless LANDSCOPE_CORS_ORIGINS names origins: the dashboard is served from the
API's own origin and needs none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from server.api import errors, responses, timeouts
from server.api.body_limit import INGEST_PATH, BodyLimit
from server.api.deps import ReadAuthorized
from server.api.fallback import add_api_fallback
from server.api.idempotency import REPLAYED
from server.api.routers import (
    analyses,
    analysis_upload,
    experiments,
    groups,
    limits,
    metrics,
    runs,
    sdk,
    system,
)
from server.db.session import WATCHDOG_GRACE_S, RequestSession, make_engine, make_sessionmaker
from server.queue import make_celery
from server.services.analysis_reconcile import reconcile_analyses
from server.services.health import HealthMonitor
from server.services.reconcile import GRACE_SECONDS, reconcile
from server.settings import Settings, get_settings

log = logging.getLogger("landscope.api")

API_PREFIX = "/api/v1"
DESCRIPTION = """Train networks with and without normalisation and watch their loss landscape.

Mutating requests need `Authorization: Bearer <token>` when the server sets
LANDSCOPE_API_TOKEN; with LANDSCOPE_PROTECT_READS, every request but GET /health does.
Non-finite numbers travel as the strings "NaN", "Infinity" and "-Infinity". See docs/api.md.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(
            settings.db_url, statement_timeout=settings.db_statement_timeout_seconds,
            connect_timeout=settings.db_connect_timeout_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine, RequestSession)
        app.state.celery = make_celery(settings)
        app.state.health = HealthMonitor(engine, app.state.celery,
                                         budget=settings.health_budget_seconds)
        app.state.health.warm()
        # The first pass runs before serving: runs saved while the broker was down are sent
        # before anyone can ask about them. No request of this process is sending yet, so
        # no grace period.
        await run_in_threadpool(reconcile_once, app, 0.0)
        reconciler = asyncio.create_task(reconcile_forever(app, settings.reconcile_seconds))
        try:
            yield
        finally:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler
            # Requests answered 503 may still be running: let them end before the engine goes.
            await stragglers.wait(timeout=commit_grace)
            app.state.celery.close()
            engine.dispose()

    app = FastAPI(title="Landscope", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)
    api = APIRouter(prefix=API_PREFIX, responses=responses.UNREACHABLE)
    # system's routes choose their own
    for module in (runs, experiments, metrics, groups, limits, analyses, sdk,
                   analysis_upload):
        api.include_router(module.router, dependencies=[ReadAuthorized],
                           responses=responses.UNAUTHORIZED)
    api.include_router(system.router)
    app.include_router(api)
    add_api_fallback(app, API_PREFIX)  # after every API route: JSON 404/405, never the page
    # Load balancers and container health checks probe /health at the root, by convention;
    # without this route the dashboard mounted at / answered it with its page.
    app.add_api_route("/health", system.health, methods=["GET"], include_in_schema=False)
    # Bounds on every request, the dashboard's included: the body first, then the time.
    # A commit in flight at the deadline ends within the database watchdog's bound.
    commit_grace = settings.db_statement_timeout_seconds + WATCHDOG_GRACE_S + 1.0
    stragglers = timeouts.install(app, settings.request_timeout_seconds, commit_grace)
    # SDK metric batches are larger than any other body (LANDSCOPE_MAX_INGEST_MB).
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, routes=[
        (INGEST_PATH, int(settings.max_ingest_mb * 2**20), "LANDSCOPE_MAX_INGEST_MB")])
    if settings.cors_origin_list:
        # Opt-in, for a separate front end: only the listed origins, only the API's methods,
        # and no cookies (the API authenticates by bearer token, never by cookie).
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=[REPLAYED], allow_credentials=False,
        )
    return app


def reconcile_once(app: FastAPI, grace: float = GRACE_SECONDS) -> None:
    """One reconciler pass (server/services/reconcile.py). Never fatal: with the database or
    broker down the API keeps serving (and answers 503 where it needs them)."""
    try:
        reconcile(app.state.sessionmaker, app.state.celery, app.state.settings, grace=grace)
    except Exception as exc:  # noqa: BLE001 - logged; the next pass tries again
        log.warning("reconcile: pass failed: %s", exc)
    try:  # analyses: never sent, or abandoned by a dead worker
        reconcile_analyses(app.state.sessionmaker, app.state.celery, app.state.settings,
                           grace=grace)
    except Exception as exc:  # noqa: BLE001 - logged; the next pass tries again
        log.warning("reconcile: analyses pass failed: %s", exc)


async def reconcile_forever(app: FastAPI, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await run_in_threadpool(reconcile_once, app)
