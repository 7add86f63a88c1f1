"""A refused request's messages by form field, for every form of the dashboard (new experiment,
the Landscape tab's launch): a 422's errors go to the fields their locations name (one
message per field, joined with "; "), anything else to the form as a whole, with the hint a
401 needs."""

from __future__ import annotations

from collections.abc import Callable

from webapp.client import ApiError

Loc = tuple[str | int, ...]
TOKEN_HINT = " Enter the server's API token at the top right."


def errors_by_field(exc: ApiError, field_of: Callable[[Loc, str], str],
                    form: str) -> dict[str, str]:
    """{field: message} for `exc`; `field_of(loc, msg)` names a location's field, `form` is
    the key of the form-wide message."""
    errors: dict[str, str] = {}
    for loc, msg in exc.field_errors():
        f = field_of(loc, msg)
        errors[f] = f"{errors[f]}; {msg}" if f in errors else msg
    if not errors:
        errors[form] = exc.message + (TOKEN_HINT if exc.status == 401 else "")
    return errors
