"""Domain errors and unreachable services as HTTP answers.

422 bodies have FastAPI's own shape ({"detail": [{"loc", "msg", "type"}]}) so a client reads a
bad spec field the same way as a malformed body. An unreachable database or broker is a 503
(try again later), never a 500: nothing is wrong with the request or the code.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from server.services.errors import BrokerUnavailable, Conflict, InvalidRequest, NotFound, QueueFull

log = logging.getLogger("landscope.api")


def _json(code: int, detail: object, **extra: object) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=code)


def _invalid(_req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidRequest)
    return _json(status.HTTP_422_UNPROCESSABLE_CONTENT, [exc.as_detail()])


def _not_found(_req: Request, exc: Exception) -> JSONResponse:
    return _json(status.HTTP_404_NOT_FOUND, str(exc))


def _conflict(_req: Request, exc: Exception) -> JSONResponse:
    return _json(status.HTTP_409_CONFLICT, str(exc))


def _queue_full(_req: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": str(exc)}, status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        headers={"Retry-After": "60"},
    )


def _saved_not_sent(_req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BrokerUnavailable)
    log.warning("broker unreachable; runs %s saved, not sent", exc.unsent)
    return _json(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), unsent_run_ids=exc.unsent)


def _broker_down(_req: Request, exc: Exception) -> JSONResponse:
    log.warning("broker unreachable: %s", exc)
    return _json(status.HTTP_503_SERVICE_UNAVAILABLE, "the message broker cannot be reached")


def _database_error(_req: Request, exc: Exception) -> JSONResponse:
    if _unreachable(exc):
        log.warning("database unreachable: %s", exc)
        return _json(status.HTTP_503_SERVICE_UNAVAILABLE, "the database cannot be reached")
    log.error("database error", exc_info=exc)
    return _json(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal database error")


def _unreachable(exc: Exception) -> bool:
    """Connection refused or lost, pool exhausted, SQLite busy: 'try later', not a bug.
    Integrity and programming errors are bugs and stay 500s."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def install(app: FastAPI) -> None:
    app.add_exception_handler(InvalidRequest, _invalid)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(BrokerUnavailable, _saved_not_sent)
    app.add_exception_handler(BrokerError, _broker_down)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)

