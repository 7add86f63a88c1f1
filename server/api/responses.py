"""The error answers each route can give, for /openapi.json: clients (and the schemathesis
conformance test) learn every status code the API uses from the schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorOut(BaseModel):
    """Every error answer: `detail` says what went wrong (a list of field errors for 422)."""

    model_config = ConfigDict(extra="allow")  # a 503 after a save adds unsent_run_ids

    detail: str | list[dict[str, Any]]


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


UNREACHABLE = {503: _doc("the database or the message broker cannot be reached")}
NOT_FOUND = {404: _doc("no such run or experiment")}
CONFLICT = {409: _doc("the run's state does not allow this")}
UNAUTHORIZED = {401: _doc("this server has an API token and the request lacks it")}
BODY = {
    400: _doc("the body is not JSON"),
    413: _doc("the body is larger than the server allows (LANDSCOPE_MAX_BODY_BYTES)"),
}
CREATES = {
    **UNAUTHORIZED,
    **BODY,
    429: _doc("too many runs queued or running; retry later"),
}
