"""Typed dependencies: the settings, a database session per request, the Celery producer,
and the bearer-token checks (mutations always, reads when the server protects them)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from server.settings import Settings

log = logging.getLogger("landscope.api")


def get_settings(request: Request) -> Settings:
    # The app's own settings (create_app's argument), not the environment's: tests inject them.
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; the handler commits, anything uncommitted is rolled back.
    A rollback that fails because the connection is lost (the database stopped answering:
    server/db/watchdog.py cut it) is no fault of the request's: the pool discards the
    connection, and the request's own answer, often sent already, stands."""
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        try:
            session.close()
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("database connection lost while closing a request's session: %s",
                        type(exc.orig).__name__)


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


# Ids and steps are 4-byte integers on PostgreSQL: a larger number is a 422, not a driver error.
INT32_MAX = 2**31 - 1
RunId = Annotated[int, Path(ge=1, le=INT32_MAX)]
ExperimentId = Annotated[int, Path(ge=1, le=INT32_MAX)]
StepQuery = Annotated[int | None, Query(ge=0, le=INT32_MAX)]
IdQuery = Annotated[int | None, Query(ge=1, le=INT32_MAX)]

SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
CeleryDep = Annotated[Celery, Depends(get_celery)]

_bearer = HTTPBearer(auto_error=False, description="LANDSCOPE_API_TOKEN, when the server sets one")


def _check_bearer(settings: Settings, credentials: HTTPAuthorizationCredentials | None,
                  what: str) -> None:
    assert settings.api_token is not None
    expected = settings.api_token.get_secret_value().encode()
    # Starlette decodes header bytes as latin-1; encoding back gives the bytes sent, which a
    # client sends as UTF-8 for a non-ASCII token.
    given = credentials.credentials.encode("latin-1") if credentials else b""
    # compare_digest takes as long for a near miss as for a wild guess.
    if not hmac.compare_digest(given, expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"this server needs 'Authorization: Bearer <token>' for {what}",
            headers={"WWW-Authenticate": "Bearer"},
        )


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require_token(settings: SettingsDep, credentials: Credentials) -> None:
    """Mutating requests need `Authorization: Bearer <token>` when the server has a token."""
    if settings.api_token is not None:
        _check_bearer(settings, credentials, "changes")


def require_read_token(settings: SettingsDep, credentials: Credentials) -> None:
    """Reads need the token too when the server sets PROTECT_READS (settings.py)."""
    if settings.protect_reads and settings.api_token is not None:
        _check_bearer(settings, credentials, "reads")


Authorized = Depends(require_token)
ReadAuthorized = Depends(require_read_token)
