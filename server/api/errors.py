"""Domain errors and unreachable services as HTTP answers.

422 bodies have FastAPI's own shape ({"detail": [{"loc", "msg", "type"}]}) so a client reads a
bad spec field the same way as a malformed body. An unreachable database or broker is a 503
(try again later), never a 500: nothing is wrong with the request or the code.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from server.schemas import json_float
from server.services.errors import BrokerUnavailable, Conflict, InvalidRequest, NotFound, QueueFull

log = logging.getLogger("landscope.api")


def _json(code: int, detail: object, **extra: object) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=code)


# How much of a bad input a 422 echoes back: enough to recognise it, never the whole body.
ECHO_CHARS = 200
ECHO_ITEMS = 20
ECHO_DEPTH = 6  # the error list and each error take two levels


def json_safe(value: object, depth: int = 0) -> object:
    """`value` as JSON can always carry it, abridged: non-finite floats as "NaN"/"Infinity",
    lone surrogates escaped (UTF-8 cannot encode them), long strings and containers cut.
    A 422 echoes the client's own input, which may be anything the JSON parser accepted."""
    if isinstance(value, float):
        return json_float(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"
    if depth >= ECHO_DEPTH:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(json_safe(str(k))): json_safe(v, depth + 1) for k, v in items[:ECHO_ITEMS]}
        if len(items) > ECHO_ITEMS:
            out["…"] = f"{len(items) - ECHO_ITEMS} more"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        out_list = [json_safe(v, depth + 1) for v in seq[:ECHO_ITEMS]]
        if len(seq) > ECHO_ITEMS:
            out_list.append(f"… {len(seq) - ECHO_ITEMS} more")
        return out_list
    if isinstance(value, BaseException):  # pydantic's ctx carries the validator's error
        return json_safe(str(value), depth)
    try:
        encoded = jsonable_encoder(value)
    except Exception:  # noqa: BLE001 - anything unencodable is shown by its text
        encoded = str(value)
    return json_safe(encoded, depth)


def _our_words(error: dict) -> dict:
    """A validator's own message as it wrote it: pydantic puts "Value error, " in front of
    every ValueError a validator raises (the error's type, value_error, still says so)."""
    msg = error.get("msg")
    if error.get("type") == "value_error" and isinstance(msg, str):
        return {**error, "msg": msg.removeprefix("Value error, ")}
    return error


def _request_invalid(_req: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 shape, but always valid JSON: the default handler echoes the input
    as is, and `{"name": NaN}` or a lone surrogate then turned the 422 into a 500."""
    assert isinstance(exc, RequestValidationError)
    errors = [_our_words(e) for e in exc.errors()]
    detail = json_safe(errors[:ECHO_ITEMS])
    if len(errors) > ECHO_ITEMS:  # the rest counted in an error of the same shape (the schema's)
        detail.append({"type": "more_errors", "loc": ["body"], "input": None,
                       "msg": f"{len(errors) - ECHO_ITEMS} more errors not shown"})
    return _json(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def _invalid(_req: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidRequest)
    return _json(status.HTTP_422_UNPROCESSABLE_CONTENT, json_safe([exc.as_detail()]))


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
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(InvalidRequest, _invalid)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(BrokerUnavailable, _saved_not_sent)
    app.add_exception_handler(BrokerError, _broker_down)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)

