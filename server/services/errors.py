"""Domain errors raised by the services; server/api/errors.py maps them to HTTP answers."""

from __future__ import annotations

from collections.abc import Sequence


class NotFound(LookupError):
    def __init__(self, what: str, ident: object):
        super().__init__(f"{what} {ident} not found")


class Conflict(Exception):
    """An illegal state change (cancel a finished run, delete a running one)."""


class QueueFull(Exception):
    """Accepting the request would put more runs in line than the server allows."""


class InvalidRequest(ValueError):
    """A bad spec or a value over a server limit, located in the request like FastAPI's own
    validation errors: loc is e.g. ("body", "base", "steps")."""

    def __init__(self, loc: Sequence[str | int], msg: str, type_: str = "value_error"):
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}")
        self.loc = tuple(loc)
        self.msg = msg
        self.type = type_

    def as_detail(self) -> dict:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class BrokerUnavailable(Exception):
    """The runs were committed but could not all be sent; they stay queued with enqueued_at
    NULL and the reconciler sends them once the broker is back."""

    def __init__(self, unsent: Sequence[int], cause: BaseException | None = None):
        self.unsent = list(unsent)
        super().__init__(
            f"the broker cannot be reached: run(s) {', '.join(map(str, self.unsent))} were "
            "saved and will be sent when the broker is back"
            + (f" ({cause})" if cause else "")
        )
